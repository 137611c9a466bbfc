"""Where echod@N serves its metrics: the configured port plus N, checked as the file is read."""

import pytest

from echod.config import ConfigError, parse
from echod.instances import INSTANCE_ENV, instance_name

ECHO = "[listener:echo]\nprotocol = echo\nport = 7\n"
METRICS = "[echod]\nmetrics = 127.0.0.1:9207\n" + ECHO


def problems(text: str, instance: str | None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(text, "test.conf", instance)
    return [str(problem) for problem in raised.value.problems]


@pytest.mark.parametrize(
    ("instance", "port"), [(None, 9207), ("0", 9207), ("1", 9208), ("2", 9209), ("40", 9247)]
)
def test_each_instance_serves_its_metrics_at_the_port_plus_its_number(instance, port):
    settings = parse(METRICS, "test.conf", instance)
    assert settings.metrics == ("127.0.0.1", port)
    assert settings.instance == instance


def test_an_ipv6_address_is_kept_and_port_0_stays_any_free_port():
    assert parse("[echod]\nmetrics = [::1]:9207\n" + ECHO, instance="3").metrics == ("::1", 9210)
    assert parse("[echod]\nmetrics = [::1]:0\n" + ECHO, instance="3").metrics == ("::1", 0)


def test_instances_without_metrics_may_have_any_name():
    assert parse(ECHO, instance="web").metrics is None


@pytest.mark.parametrize("instance", ["web", "01", "-1", "1.5", "٣"])
def test_with_metrics_on_an_instance_that_is_no_number_is_refused_saying_why(instance):
    assert problems(METRICS, instance) == [
        f"test.conf:2: [echod] metrics: echod@{instance} cannot serve metrics: an instance serves them at "
        "the port of metrics = 127.0.0.1:9207 plus its number, so with metrics on, instances are numbered "
        "(echod@1, echod@2, ...); run numbered instances, or leave metrics empty"
    ]


def test_an_instance_whose_port_would_pass_65535_is_refused_at_the_edge():
    assert parse("[echod]\nmetrics = 127.0.0.1:65533\n" + ECHO, instance="2").metrics == ("127.0.0.1", 65535)
    assert problems("[echod]\nmetrics = 127.0.0.1:65533\n" + ECHO, "3") == [
        "test.conf:2: [echod] metrics: echod@3 would serve its metrics on port 65533 + 3 = 65536, "
        "past 65535; give metrics a port below 65533"
    ]


def test_an_instances_metrics_port_on_a_listeners_port_is_refused_for_that_instance_only():
    text = "[echod]\nmetrics = 127.0.0.1:9207\n[listener:echo]\nprotocol = echo\nport = 9209\n"
    assert parse(text, instance="1").metrics == ("127.0.0.1", 9208)
    assert problems(text, "2") == [
        "test.conf:2: [echod] metrics: 127.0.0.1:9209 (echod@2's metrics) is where [listener:echo] listens; "
        "give the metrics another port"
    ]


def test_the_instance_comes_from_the_environment_the_unit_sets():
    assert instance_name({INSTANCE_ENV: "2"}) == "2"
    assert instance_name({INSTANCE_ENV: ""}) is None
    assert instance_name({}) is None
