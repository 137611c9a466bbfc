"""
The C{echod} command line: C{--version}, C{check-config} on good and bad
files with their exit statuses, and the arguments C{run} and C{probe} refuse;
as real processes where the process is the point (its exit status, what
twistd makes of it), else L{echod.cli.main} in-process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import twisted

from echod import __version__, cli
from echod.instances import INSTANCE_ENV
from echod.probe.output import UNKNOWN
from echod.probe.packets import PacketOptions
from echod.probe.tally import STATUS_ERROR
from tests.integration.daemon import config_text, environment

BAD_CONFIG = "[listener:echo]\nprotocol = echo\nport = 7\nmax_conections = 5\n"
NO_FILE = "no such file; create it or name another with -c FILE"
GOOD = {"echo": {"protocol": "echo", "port": "7"}}


def echod(*args: str, **env: str) -> subprocess.CompletedProcess:
    """C{echod ARGS} run as a process, to its end."""
    command = [sys.executable, "-m", "echod", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment(**env), timeout=60)


def exited(capsys, args: list[str]) -> tuple[int | str | None, str, str]:
    """C{echod ARGS} in-process, which must exit: its status, and what it wrote to stdout and stderr."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.fixture(autouse=True)
def no_instance(monkeypatch):
    """As echod.service runs it, not an echod@N instance."""
    monkeypatch.delenv(INSTANCE_ENV, raising=False)
    monkeypatch.delenv(cli.CONFIG_ENV, raising=False)


# -- the command ----------------------------------------------------------------------------------


def test_version_as_a_process_exits_0():
    result = echod("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"echod {__version__} (Twisted ")


def test_version_in_process_names_echod_and_twisted(capsys):
    assert exited(capsys, ["--version"])[:2] == (0, f"echod {__version__} (Twisted {twisted.__version__})\n")


def test_no_command_is_a_usage_error_naming_the_commands(capsys):
    status, _, err = exited(capsys, [])
    assert status == 2
    assert err.startswith("usage: echod ")
    assert err.endswith("echod: error: the following arguments are required: COMMAND\n")


def test_an_unknown_command_is_refused_with_the_known_ones(capsys):
    status, _, err = exited(capsys, ["serve"])
    assert status == 2
    assert "argument COMMAND: invalid choice: 'serve' (choose from " in err


# -- check-config -----------------------------------------------------------------------------


def test_check_config_quiet_prints_nothing_for_a_good_file_and_every_problem_for_a_bad_one(tmp_path, capsys):
    good, bad = tmp_path / "good.conf", tmp_path / "bad.conf"
    good.write_text(config_text(**GOOD))
    bad.write_text(BAD_CONFIG + "idle_timeout = soon\n")
    assert cli.main(["check-config", "-q", "-c", str(good)]) == 0
    assert capsys.readouterr() == ("", "")
    status, out, err = exited(capsys, ["check-config", "--quiet", "--config", str(bad)])
    assert (status, out) == (78, "")
    assert err.splitlines() == [
        f"echod: configuration error: {bad}:4: [listener:echo] max_conections: unknown key "
        "'max_conections'; did you mean 'max_connections'?",
        f"echod: configuration error: {bad}:5: [listener:echo] idle_timeout: 'soon' is not a duration; "
        "write seconds, or a number with ms, s, m, h or d (e.g. 5m)",
    ]


def test_check_config_of_a_missing_file_says_to_create_it(tmp_path, capsys):
    status, _, err = exited(capsys, ["check-config", "-c", str(tmp_path / "nope.conf")])
    assert (status, err) == (78, f"echod: configuration error: {tmp_path}/nope.conf: {NO_FILE}\n")


def test_check_config_reads_the_file_echod_config_names_when_no_c_is_given(tmp_path):
    path = tmp_path / "elsewhere.conf"
    path.write_text(config_text(**GOOD))
    result = echod("check-config", ECHOD_CONFIG=str(path))
    assert result.returncode == 0, result
    assert result.stdout.splitlines()[0] == f"{path}: OK, log_level=info, access_log=off, metrics=off"


def test_check_config_tells_where_the_metrics_are_and_where_an_instances_would_be(tmp_path, capsys):
    path = tmp_path / "echod.conf"
    path.write_text(config_text({"metrics": "127.0.0.1:9207"}, **GOOD))
    assert cli.main(["check-config", "-c", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{path}: OK, log_level=info, access_log=off, metrics=http://127.0.0.1:9207/metrics "
        "(echod@N: port 9207 + N, e.g. 127.0.0.1:9208 for echod@1)"
    )


def test_check_config_summarises_or_lists_every_problem(tmp_path):
    good = tmp_path / "good.conf"
    good.write_text(
        config_text(echo={"protocol": "echo", "port": "7"}, bc={"protocol": "bytecount", "port": "9"})
    )
    run = [sys.executable, "-m", "echod", "check-config", "-c"]
    result = subprocess.run([*run, str(good)], capture_output=True, text=True, env=environment(), timeout=60)
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == f"{good}: OK, log_level=info, access_log=off, metrics=off"
    assert lines[1].startswith("listener echo: echo/tcp on 127.0.0.1:7, max_connections=1024")
    assert lines[2].endswith("max_message_size=16M, max_header_length=20")
    bad = tmp_path / "bad.conf"
    bad.write_text(BAD_CONFIG + "port = 8\n")
    result = subprocess.run([*run, str(bad)], capture_output=True, text=True, env=environment(), timeout=60)
    assert result.returncode == 78
    assert result.stdout == ""
    assert "this key appears twice" in result.stderr


# -- run -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--no-such-option"], "echod: error: unrecognized arguments: --no-such-option"),
        (["run", "-c"], "echod run: error: argument -c/--config: expected one argument"),
        (["run", "-q"], "echod: error: unrecognized arguments: -q"),
    ],
)
def test_run_refuses_arguments_it_does_not_take_before_starting_anything(capsys, args, message):
    status, _, err = exited(capsys, args)
    assert (status, err.splitlines()[-1]) == (2, message)


def test_run_with_a_missing_file_exits_78_with_the_fix(tmp_path):
    result = echod("run", "-c", str(tmp_path / "nope.conf"))
    assert result.returncode == 78, result
    assert f"echod: configuration error: {tmp_path}/nope.conf: {NO_FILE}" in result.stderr.splitlines()


# -- probe ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["probe"], "echod probe: error: the following arguments are required: HOST[:PORT]"),
        (
            ["probe", "-c", "0", "192.0.2.1"],
            "echod probe: error: argument -c/--count: '0' is not a count of at least 1",
        ),
        (
            ["probe", "--tcp", "--udp", "192.0.2.1"],
            "echod probe: error: argument --udp: not allowed with argument --tcp",
        ),
        (["probe", "-4", "-6", "192.0.2.1"], "echod probe: error: argument -6: not allowed with argument -4"),
        (
            ["probe", "-W", "soon", "192.0.2.1"],
            "echod probe: error: argument -W/--timeout: 'soon' is not a duration; "
            "write seconds, or a number with ms, s, m, h or d (e.g. 5m)",
        ),
        (["probe", "--warn", "192.0.2.1"], "echod: error: unrecognized arguments: --warn"),
        (
            ["probe", "-Q", "ef1", "192.0.2.1"],
            "echod probe: error: argument -Q/--qos: 'ef1' is not a DSCP name (ef, af11 to af43, cs0 to cs7, "
            "va, le), dscp:0 to dscp:63, nor a TOS byte (0 to 255, or 0x00 to 0xff)",
        ),
        (
            ["probe", "-t", "0", "192.0.2.1"],
            "echod probe: error: argument -t/--ttl: 0 is out of range; expected 1 to 255",
        ),
        (
            ["probe", "-M", "probe", "192.0.2.1"],
            "echod probe: error: argument -M/--pmtu-discovery: 'probe' is not one of: do, want, dont",
        ),
        (
            ["probe", "--source-port", "70000", "192.0.2.1"],
            "echod probe: error: argument --source-port: 70000 is out of range; expected 1 to 65535",
        ),
        (
            ["probe", "-I", "eth:0", "192.0.2.1"],
            "echod probe: error: argument -I/--interface: 'eth:0' is neither an IPv4 or IPv6 address nor an "
            "interface name (1 to 15 characters, without '/', ':' or spaces)",
        ),
        (
            ["probe", "-I", "2001:db8::1", "192.0.2.1"],
            "echod probe: error: -I 2001:db8::1 is an IPv6 address, and the probe goes over IPv4",
        ),
        (
            ["probe", "-4", "-I", "2001:db8::1", "echo.example"],
            "echod probe: error: -I 2001:db8::1 is an IPv6 address, and the probe goes over IPv4",
        ),
    ],
)
def test_probe_refuses_a_bad_argument_as_a_usage_error_with_status_2(capsys, args, message):
    status, _, err = exited(capsys, args)
    assert (status, err.splitlines()[-1]) == (2, message)


def test_the_packet_options_reach_the_run_as_given(monkeypatch):
    from echod.probe import run

    ran = []
    monkeypatch.setattr(run, "run", lambda options, reporter: ran.append(options) or 0)
    args = [
        "probe",
        "--udp",
        "-I",
        "198.18.0.1",
        "--source-port",
        "4000",
        "-Q",
        "af41",
        "-t",
        "3",
        "-M",
        "do",
    ]
    assert cli.main([*args, "echo.example"]) == 0
    (options,) = ran
    assert options.packets == PacketOptions(
        source="198.18.0.1", source_port=4000, tos=34 << 2, ttl=3, pmtu_discovery="do"
    )
    assert options.family == socket.AF_INET  # the source's, for the name to resolve to
    assert cli.main(["probe", "-I", "eth1", "-Q", "0x2e", "echo.example"]) == 0
    assert ran[1].packets == PacketOptions(interface="eth1", tos=0x2E) and ran[1].family is None


def test_a_bad_argument_is_a_usage_error_with_status_2(capsys):
    status, _, err = exited(capsys, ["probe", "-i", "0.0001", "192.0.2.1"])
    assert status == 2
    assert "-i 0.0001: at least 0.001 s" in err


def test_a_bad_argument_to_a_monitoring_check_is_its_unknown(capsys):
    status, out, _ = exited(capsys, ["probe", "--critical", "100,20%", "-s", "huge", "192.0.2.1"])
    assert status == 3
    assert out.startswith("ECHO UNKNOWN - echod probe: argument -s/--size: 'huge' is not a size")


def test_a_warning_above_the_critical_threshold_is_the_checks_unknown(capsys):
    status, out, _ = exited(capsys, ["probe", "--warning", "100,70%", "--critical", "500,60%", "192.0.2.1"])
    assert status == 3
    assert out.startswith("ECHO UNKNOWN - echod probe: --warning's loss (70%) is above --critical's (60%)")


def test_an_unknown_argument_to_a_monitoring_check_is_its_unknown_too(capsys):
    status, out, _ = exited(capsys, ["probe", "--warning", "100,20%", "--no-such-option", "192.0.2.1"])
    assert status == 3
    assert out.startswith("ECHO UNKNOWN - echod: unrecognized arguments: --no-such-option")


def test_a_name_that_does_not_resolve_is_an_error_with_status_2(capsys):
    assert cli.main(["probe", "-c", "1", "no-such-host.invalid"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("echod probe: cannot resolve no-such-host.invalid: ")
    assert captured.out == ""


#: `echod probe ARGS` with a bug in it: the run fails as it starts.
BROKEN_PROBE = """
import sys
from echod import cli
from echod.probe import run

def broken(self, resolving=None):
    raise RuntimeError("a bug")

run.Run.start = broken
sys.exit(cli.main(["probe", *sys.argv[1:]]))
"""


@pytest.mark.parametrize(
    ("thresholds", "status", "line"),
    [
        ((), STATUS_ERROR, ""),
        (("--warning", "100,20%", "--critical", "200,50%"), UNKNOWN, "ECHO UNKNOWN - internal error: a bug"),
    ],
)
def test_a_failure_of_the_probe_itself_is_an_error_or_the_checks_unknown(thresholds, status, line):
    # Its own process: the run goes on the global reactor, which runs once a process.
    done = subprocess.run(
        [sys.executable, "-c", BROKEN_PROBE, *thresholds, "-c", "1", "192.0.2.1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=60,
    )
    assert done.returncode == status, done
    assert done.stdout.splitlines() == ([line] if line else [])
