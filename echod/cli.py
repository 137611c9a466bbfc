"""
The C{echod} command: run the daemon under twistd, check a configuration, or
probe an echo server (the client end, L{echod.probe.run}).

Bookworm ships twistd only as C{twistd3}; running it from here, in-process,
works the same on every Twisted and Python installation.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable
from typing import IO, NoReturn, TypeVar

from echod import __version__
from echod.addresses import host_port
from echod.config import DEFAULT_PATH, EX_CONFIG, ConfigError, Settings, load
from echod.daemon.signals import defer_early_signals
from echod.instances import instance_name

#: The environment variable naming the configuration file for the .tac file.
CONFIG_ENV = "ECHOD_CONFIG"

TAC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echod.tac")

T = TypeVar("T")


def report(error: ConfigError, stream: IO[str]) -> None:
    """Write every problem of C{error}, one a line, as errors."""
    from echod.daemon.logs import is_journal

    prefix = "<3>" if is_journal(stream) else ""
    for problem in error.problems:
        stream.write(f"{prefix}echod: configuration error: {problem}\n")
    stream.flush()


def load_or_exit(path: str, instance: str | None = None) -> Settings:
    """Load C{path} (for echod@C{instance}), or report every problem on stderr and exit with EX_CONFIG."""
    try:
        return load(path, instance)
    except ConfigError as e:
        report(e, sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def check_config(path: str, quiet: bool = False) -> int:
    """
    Print a summary line per listener (nothing if C{quiet}); on problems,
    print them all and exit with EX_CONFIG. Run by an echod@N unit (its
    ExecReload), it checks the file as that instance reads it.
    """
    settings = load_or_exit(path, instance_name())
    if quiet:
        return 0
    metrics = "off"
    if settings.metrics:
        metrics = f"http://{host_port(*settings.metrics)}/metrics"
        address, port = settings.metrics
        if settings.instance is not None:
            metrics += f" (echod@{settings.instance})"
        elif 0 < port < 65535:
            metrics += f" (echod@N: port {port} + N, e.g. {host_port(address, port + 1)} for echod@1)"
    print(
        f"{path}: OK, log_level={settings.log_level}, access_log={settings.access_log or 'off'}, "
        f"metrics={metrics}"
    )
    for listener in settings.listeners:
        print(listener.summary())
    return 0


def keep_readline_out() -> None:
    """
    Make C{import readline} fail in this process, as if it were not installed.

    twistd imports pdb, and from Python 3.13 (Debian 13) pdb imports
    rlcompleter, which imports readline, whose set-up initialises the
    terminal (ncurses), which calls setfsuid(): a privileged system call the
    unit's SystemCallFilter refuses. A daemon has no terminal to edit lines
    on; both pdb and rlcompleter carry on without readline.
    """
    sys.modules.setdefault("readline", None)


def run(path: str) -> None:
    """
    Run echod in the foreground under twistd until it is stopped. The
    application file reads the configuration (once) and exits with
    EX_CONFIG, every problem printed, if it is bad.
    """
    os.environ[CONFIG_ENV] = path
    defer_early_signals()
    keep_readline_out()
    from echod.systemd import activation

    # Before twistd: its plugins import Twisted's systemd support, which
    # takes LISTEN_FDS out of the environment for itself.
    activation.capture()
    from twisted.scripts.twistd import run as twistd

    sys.argv = ["echod", "--nodaemon", "--pidfile=", "--python", TAC_PATH]
    twistd()


class _Parser(argparse.ArgumentParser):
    """
    argparse's parser, but for a monitoring check (C{probe --warning/--critical})
    a bad argument is the check's UNKNOWN: one status line on stdout and exit
    status 3, as monitoring plugins report it, instead of argparse's 2.
    """

    unknown_on_error = False

    def error(self, message: str) -> NoReturn:
        if self.unknown_on_error:
            from echod.probe.output import UNKNOWN, unknown_line

            print(unknown_line(f"{self.prog}: {message}"))
            self.exit(UNKNOWN)
        super().error(message)


def _typed(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from one of our parsers, keeping its message."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"{text!r} is not a count of at least 1")
    return int(text)


def add_probe_command(commands: argparse._SubParsersAction) -> _Parser:
    """The C{probe} subcommand's options, in the manner of ping(8)."""
    from echod.probe.options import parse_thresholds
    from echod.probe.packets import (
        PMTU_DISCOVERY,
        parse_pmtu_discovery,
        parse_qos,
        parse_source,
        parse_source_port,
        parse_ttl,
    )
    from echod.units import parse_duration, parse_size

    text = "measure an echo server: round trips, loss, every byte checked"
    # No abbreviations: a monitoring check's bad option (--warn for --warning) must be
    # refused as the check's own UNKNOWN, not taken for another.
    probe = commands.add_parser("probe", help=text, description=text.capitalize() + ".", allow_abbrev=False)
    mode = probe.add_mutually_exclusive_group()
    for flag, help_text in (
        ("tcp", "one persistent TCP connection (default)"),
        ("connect", "a new TCP connection for every probe: connect time and echo time"),
        ("udp", "a datagram a probe"),
        ("bytecount", "echod's bytecount protocol, a connection a probe (default port 50007)"),
    ):
        mode.add_argument(f"--{flag}", dest="mode", action="store_const", const=flag, help=help_text)
    family = probe.add_mutually_exclusive_group()
    family.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET, help="IPv4 only")
    family.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6, help="IPv6 only")
    probe.set_defaults(mode="tcp", family=None)
    probe.add_argument(
        "-c", "--count", type=_typed(_count), metavar="COUNT", help="stop after COUNT probes (default: never)"
    )
    probe.add_argument(
        "-i",
        "--interval",
        type=_typed(parse_duration),
        default=1.0,
        help="between probes (default 1s; >= 1ms)",
    )
    probe.add_argument(
        "-s",
        "--size",
        type=_typed(parse_size),
        default=64,
        help="payload bytes a probe (default 64; up to 16M over TCP, a datagram's largest over UDP)",
    )
    probe.add_argument(
        "-W", "--timeout", type=_typed(parse_duration), default=2.0, help="for each answer (default 2s)"
    )
    probe.add_argument("-w", "--deadline", type=_typed(parse_duration), help="end the whole run after this")
    probe.add_argument("-q", "--quiet", action="store_true", help="print only the first line and the summary")
    probe.add_argument("--json", action="store_true", help="print one JSON object at the end, nothing else")
    packets = probe.add_argument_group("what the packets carry, as ping's options set it")
    packets.add_argument(
        "-I",
        "--interface",
        dest="source",
        type=_typed(parse_source),
        metavar="ADDRESS|INTERFACE",
        help="send from this address (bound before connecting), or through this interface (SO_BINDTODEVICE)",
    )
    packets.add_argument(
        "--source-port", type=_typed(parse_source_port), metavar="PORT", help="send from this port (1-65535)"
    )
    packets.add_argument(
        "-Q",
        "--qos",
        type=_typed(parse_qos),
        metavar="DSCP|TOS",
        help="a DSCP name (ef, af11..af43, cs0..cs7, va, le), dscp:N (0-63), or the TOS byte itself as "
        "ping takes it (0-255, 0x00-0xff): IP_TOS, IPV6_TCLASS",
    )
    packets.add_argument(
        "-t", "--ttl", type=_typed(parse_ttl), metavar="TTL", help="IPv4 TTL, IPv6 hop limit (1-255)"
    )
    packets.add_argument(
        "-M",
        "--pmtu-discovery",
        type=_typed(parse_pmtu_discovery),
        metavar="|".join(PMTU_DISCOVERY),
        help="path-MTU discovery: do (set DF, never fragment: a datagram above the path MTU fails), "
        "want (the system's default: DF, fragment above the MTU learnt), dont (no DF)",
    )
    for level in ("warning", "critical"):
        probe.add_argument(
            f"--{level}",
            type=_typed(parse_thresholds),
            metavar="RTT_MS,LOSS%",
            help=f"monitoring check: {level.upper()} at or above this average round trip or loss",
        )
    probe.add_argument("target", metavar="HOST[:PORT]", help="IPv4, [IPv6] or a name; port 7 by default")
    return probe


def probe(args: argparse.Namespace, parser: _Parser) -> int:
    """Run C{echod probe}: its exit status, or the monitoring check's."""
    from echod.probe.options import make_options
    from echod.probe.output import reporter
    from echod.probe.packets import PacketOptions
    from echod.probe.run import run

    try:
        source = args.source
        packets = PacketOptions(
            source=source.address if source else None,
            interface=source.interface if source else None,
            source_port=args.source_port,
            tos=args.qos,
            ttl=args.ttl,
            pmtu_discovery=args.pmtu_discovery,
        )
        options = make_options(
            args.target,
            mode=args.mode,
            family=args.family,
            count=args.count,
            interval=args.interval,
            size=args.size,
            timeout=args.timeout,
            deadline=args.deadline,
            quiet=args.quiet,
            json=args.json,
            warning=args.warning,
            critical=args.critical,
            packets=packets,
        )
    except ValueError as e:
        parser.error(str(e))
    return run(options, reporter(options, sys.stdout, sys.stderr))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the C{echod} command."""
    import twisted

    if argv is None:
        argv = sys.argv[1:]
    parser = _Parser(prog="echod", description="RFC 862 echo and bytecount echo daemon.")
    parser.add_argument(
        "--version", action="version", version=f"echod {__version__} (Twisted {twisted.__version__})"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    config_help = f"configuration file (default: ${CONFIG_ENV} or {DEFAULT_PATH})"
    default_path = os.environ.get(CONFIG_ENV, DEFAULT_PATH)
    for name, text in (
        ("run", "serve in the foreground until stopped"),
        ("check-config", "validate the configuration and summarise its listeners"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("-c", "--config", default=default_path, metavar="FILE", help=config_help)
        if name == "check-config":
            command.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    probe_parser = add_probe_command(commands)
    # The top-level parser too: it is the one that refuses arguments no subcommand knows.
    parser.unknown_on_error = probe_parser.unknown_on_error = (
        bool(argv)
        and argv[0] == "probe"
        and any(arg.startswith(("--warning", "--critical")) for arg in argv[1:])
    )
    args = parser.parse_args(argv)
    if args.command == "probe":
        return probe(args, probe_parser)
    if args.command == "check-config":
        return check_config(args.config, args.quiet)
    run(args.config)
    return 0
