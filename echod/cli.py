"""
The C{echod} command: run the daemon under twistd, or check a configuration.

Bookworm ships twistd only as C{twistd3}; running it from here, in-process,
works the same on every Twisted and Python installation.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO

from echod import __version__
from echod.addresses import host_port
from echod.config import DEFAULT_PATH, EX_CONFIG, ConfigError, Settings, load
from echod.signals import defer_early_signals

#: The environment variable naming the configuration file for the .tac file.
CONFIG_ENV = "ECHOD_CONFIG"

TAC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echod.tac")


def report(error: ConfigError, stream: IO[str]) -> None:
    """Write every problem of C{error}, one a line, as errors."""
    from echod.logs import is_journal

    prefix = "<3>" if is_journal(stream) else ""
    for problem in error.problems:
        stream.write(f"{prefix}echod: configuration error: {problem}\n")
    stream.flush()


def load_or_exit(path: str) -> Settings:
    """Load C{path}, or report every problem on stderr and exit with EX_CONFIG."""
    try:
        return load(path)
    except ConfigError as e:
        report(e, sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def check_config(path: str, quiet: bool = False) -> int:
    """
    Print a summary line per listener (nothing if C{quiet}); on problems,
    print them all and exit with EX_CONFIG.
    """
    settings = load_or_exit(path)
    if quiet:
        return 0
    metrics = f"http://{host_port(*settings.metrics)}/metrics" if settings.metrics else "off"
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
    from echod import activation

    # Before twistd: its plugins import Twisted's systemd support, which
    # takes LISTEN_FDS out of the environment for itself.
    activation.capture()
    from twisted.scripts.twistd import run as twistd

    sys.argv = ["echod", "--nodaemon", "--pidfile=", "--python", TAC_PATH]
    twistd()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the C{echod} command."""
    import twisted

    parser = argparse.ArgumentParser(prog="echod", description="RFC 862 echo and bytecount echo daemon.")
    parser.add_argument(
        "--version", action="version", version=f"echod {__version__} (Twisted {twisted.__version__})"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config, args.quiet)
    run(args.config)
    return 0
