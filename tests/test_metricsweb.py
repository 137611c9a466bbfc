"""
The metrics endpoint's HTTP side on Twisted's web server, driven byte by
byte through a test transport and a clock: what answers, and its bounds.
Over real sockets in a real daemon: tests/integration/test_metrics.py.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from echod.metrics import DaemonView, make_registry
from echod.metricsweb import FRESH, MAX_CONNECTIONS, REQUEST_TIMEOUT, CappedFactory, MetricsPage, MetricsSite

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class Counting:
    """A registry whose scrapes are counted."""

    def __init__(self) -> None:
        self.scrapes = 0
        self.registry = make_registry(self.view)

    def view(self) -> DaemonView:
        self.scrapes += 1
        return DaemonView([], True, 0.0)


def endpoint(registry: CollectorRegistry | None = None) -> tuple[CappedFactory, Clock]:
    clock = Clock()
    registry = registry if registry is not None else Counting().registry
    return CappedFactory(MetricsSite(MetricsPage(registry, clock), clock)), clock


def connect(factory: CappedFactory):
    protocol = factory.buildProtocol(PEER)
    if protocol is None:
        return None, None
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    return protocol, transport


def response(transport: StringTransport) -> tuple[str, dict[str, str], bytes]:
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status, headers, body


def test_get_metrics_answers_in_the_prometheus_text_format():
    factory, _ = endpoint()
    protocol, transport = connect(factory)
    protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = response(transport)
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("text/plain; version=0.0.4; charset=utf-8")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"echod_build_info", "echod_config_last_reload_successful", "process_open_fds"} <= names
    assert not transport.disconnecting  # keep-alive, as Prometheus uses it


def test_the_root_answers_too_and_other_paths_are_not_found():
    factory, _ = endpoint()
    for path, expected in ((b"/", "HTTP/1.1 200 OK"), (b"/metrics?x=1", "HTTP/1.1 200 OK")):
        protocol, transport = connect(factory)
        protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response(transport)[0] == expected
    for path in (b"/metricsx", b"/metrics/", b"/favicon.ico", b"/../etc/passwd"):
        protocol, transport = connect(factory)
        protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response(transport)[0] == "HTTP/1.1 404 Not Found", path


def test_methods_other_than_get_and_head_are_not_allowed():
    factory, _ = endpoint()
    for method in (b"POST", b"PUT", b"DELETE", b"OPTIONS", b"BREW"):
        protocol, transport = connect(factory)
        protocol.dataReceived(method + b" /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = response(transport)
        assert status == "HTTP/1.1 405 Method Not Allowed", method
        assert set(headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    protocol, transport = connect(factory)
    protocol.dataReceived(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = response(transport)
    assert (status, body) == ("HTTP/1.1 200 OK", b"")


def test_a_request_with_a_body_is_refused_and_the_body_never_read():
    factory, _ = endpoint()
    for framing in (b"Content-Length: 1000000000\r\n", b"Transfer-Encoding: chunked\r\n"):
        protocol, transport = connect(factory)
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + b"x" * 60000)
        status, _, body = response(transport)
        assert status == "HTTP/1.1 413 Request Entity Too Large"
        assert body == b""
        assert transport.disconnecting


def test_a_request_head_sent_a_line_at_a_time_is_cut_off_at_the_deadline():
    factory, clock = endpoint()
    protocol, transport = connect(factory)
    protocol.dataReceived(b"GET /metrics HTTP/1.1\r\n")
    # Each line would restart Twisted's own idle timeout; the deadline holds from the start.
    for _ in range(int(REQUEST_TIMEOUT) - 1):
        clock.advance(1)
        protocol.dataReceived(b"X-Slow: 1\r\n")
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting and transport.disconnected  # aborted, without an answer
    assert transport.value() == b""


def test_a_kept_alive_connection_has_a_new_deadline_for_each_request():
    factory, clock = endpoint()
    protocol, transport = connect(factory)
    for _ in range(3):
        clock.advance(REQUEST_TIMEOUT - 1)
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert transport.value().startswith(b"HTTP/1.1 200 OK")
        transport.clear()
    assert not transport.disconnecting
    clock.advance(REQUEST_TIMEOUT)  # idle after its last answer
    assert transport.disconnected


def test_connections_beyond_the_cap_are_refused_until_one_closes():
    factory, _ = endpoint()
    held = [connect(factory) for _ in range(MAX_CONNECTIONS)]
    assert all(protocol is not None for protocol, _ in held)
    assert connect(factory) == (None, None)
    held[0][0].connectionLost(None)
    assert connect(factory)[0] is not None


def test_a_page_is_rendered_at_most_once_per_interval_however_often_asked():
    counting = Counting()
    factory, clock = endpoint(counting.registry)
    protocol, transport = connect(factory)
    for _ in range(50):
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert counting.scrapes == 1
    assert transport.value().count(b"HTTP/1.1 200 OK") == 50
    clock.advance(FRESH)
    protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert counting.scrapes == 2


def test_openmetrics_when_the_scraper_asks_for_it():
    factory, _ = endpoint()
    protocol, transport = connect(factory)
    protocol.dataReceived(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
        b"Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n"
    )
    _, headers, body = response(transport)
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
