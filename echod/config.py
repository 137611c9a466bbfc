"""
The configuration file: INI text in, one immutable L{Settings} out.

Everything the daemon reads about its configuration comes from the L{Settings}
built here, once per load. Every mistake in the file becomes a L{Problem} that
names the file, line, section and key, says what was wrong and what is allowed;
all of them are collected, so an admin fixes the file in one pass.
"""

from __future__ import annotations

import configparser
import difflib
import functools
import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from echod import endpoints
from echod.addresses import DEFAULT_PREFIX_IPV4, DEFAULT_PREFIX_IPV6, host_port
from echod.instances import instance_metrics
from echod.units import (
    Network,
    did_you_mean,
    duration_within,
    format_duration,
    format_networks,
    format_port_ranges,
    format_size,
    one_of,
    optional_absolute_path,
    optional_size_within,
    parse_boolean,
    parse_networks,
    parse_port_ranges,
    size_within,
    whole_number,
)

DEFAULT_PATH = "/etc/echod.conf"

#: sysexits.h EX_CONFIG: what the daemon and C{check-config} exit with on a bad file.
EX_CONFIG = 78

PROTOCOLS = ("echo", "bytecount")
TRANSPORTS = ("tcp", "udp")
LOG_LEVELS = ("debug", "info", "warning", "error")

GLOBAL_SECTION = "echod"
LISTENER_PREFIX = "listener:"
_LISTENER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration file, located as precisely as known."""

    path: str
    message: str
    line: int | None = None
    section: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        scope = f"[{self.section}]" if self.section is not None else ""
        if self.key is not None:
            scope += f" {self.key}" if scope else self.key
        return f"{where}: {scope}: {self.message}" if scope else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; L{problems} says every reason why."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class ListenerSettings:
    """One listening socket and the protocol and limits it serves with."""

    name: str
    protocol: str
    transport: str
    address: str
    port: int
    max_connections: int
    max_connections_per_peer: int
    idle_timeout: float
    max_message_size: int
    max_header_length: int
    blocked_source_ports: tuple[tuple[int, int], ...]
    datagram_rate_per_peer: int
    datagram_rate: int
    byte_rate: int
    #: The socket receive buffer asked for (SO_RCVBUF), or None: the kernel's for systemd's sockets,
    #: echod's 4 MiB ask for its own (either capped by net.core.rmem_max).
    receive_buffer: int | None
    reuse_port: bool
    #: How long a prefix of the peer's address is one peer for the per-peer limits.
    peer_prefix_ipv4: int
    peer_prefix_ipv6: int
    #: Whether every connection begins with a PROXY header (v1 or v2) naming the client.
    proxy_protocol: bool
    #: The sources whose PROXY headers are believed; a connection from any other is refused.
    trusted_proxies: tuple[Network, ...]

    def summary(self) -> str:
        """One line for C{check-config} and the log."""
        where = host_port(self.address, self.port)
        if self.transport == "udp":
            return (
                f"listener {self.name}: {self.protocol}/{self.transport} on {where}, "
                f"blocked_source_ports={format_port_ranges(self.blocked_source_ports) or 'none'}, "
                f"datagram_rate_per_peer={self.datagram_rate_per_peer}, datagram_rate={self.datagram_rate}, "
                f"byte_rate={format_size(self.byte_rate)}, "
                f"receive_buffer={format_size(self.receive_buffer) if self.receive_buffer else 'default'}, "
                f"{self._peer_prefixes()}"
            )
        text = (
            f"listener {self.name}: {self.protocol}/{self.transport} on {where}, "
            f"max_connections={self.max_connections}, "
            f"max_connections_per_peer={self.max_connections_per_peer}, {self._peer_prefixes()}, "
            f"idle_timeout={format_duration(self.idle_timeout) if self.idle_timeout else 'off'}"
        )
        if self.protocol == "bytecount":
            text += (
                f", max_message_size={format_size(self.max_message_size)}"
                f", max_header_length={self.max_header_length}"
            )
        if self.proxy_protocol:
            text += f", proxy_protocol=yes from {format_networks(self.trusted_proxies)}"
        return text

    def _peer_prefixes(self) -> str:
        return f"peer_prefix_ipv4={self.peer_prefix_ipv4}, peer_prefix_ipv6={self.peer_prefix_ipv6}"


@dataclass(frozen=True)
class Settings:
    """Everything a configuration file says, parsed and checked."""

    path: str
    log_level: str
    access_log: str | None
    shutdown_grace: float
    listeners: tuple[ListenerSettings, ...] = field(default=())
    #: Where the Prometheus metrics are served (address, port), or C{None}: off;
    #: for an echod@N instance, where that instance serves them (echod.instances).
    metrics: tuple[str, int] | None = None
    #: The echod@ instance this was read for (the text after the @), or C{None}.
    instance: str | None = None


# -- the keys --------------------------------------------------------------
#
# Each key's converter turns its text into the typed value or raises a
# ValueError saying what is allowed (echod.units, echod.endpoints); the reader
# adds where the value is.


def _optional_endpoint(text: str) -> tuple[str, int] | None:
    return endpoints.endpoint(text) if text else None


@dataclass(frozen=True)
class _Key:
    convert: Callable[[str], Any]
    default: str | None  # None: the key is required
    protocols: tuple[str, ...] = PROTOCOLS
    transports: tuple[str, ...] = TRANSPORTS


_GLOBAL_KEYS: dict[str, _Key] = {
    "log_level": _Key(one_of(*LOG_LEVELS), "info"),
    "access_log": _Key(optional_absolute_path, ""),
    "shutdown_grace": _Key(duration_within(0, 3600), "10s"),
    "metrics": _Key(_optional_endpoint, ""),
}

_LISTENER_KEYS: dict[str, _Key] = {
    "protocol": _Key(one_of(*PROTOCOLS), None),
    "transport": _Key(one_of(*TRANSPORTS), "tcp"),
    "address": _Key(endpoints.address, "::"),
    "port": _Key(functools.partial(endpoints.port, 0, 65535), None),
    "max_connections": _Key(whole_number(1, 1_000_000), "1024", transports=("tcp",)),
    "max_connections_per_peer": _Key(whole_number(1, 1_000_000), "64", transports=("tcp",)),
    "idle_timeout": _Key(
        duration_within(0.001, 86400 * 7, zero_means="no timeout"), "5m", transports=("tcp",)
    ),
    "max_message_size": _Key(size_within(1, 1 << 40), "16M", ("bytecount",)),
    "max_header_length": _Key(whole_number(1, 64), "20", ("bytecount",)),
    "blocked_source_ports": _Key(parse_port_ranges, "0-1023", transports=("udp",)),
    "datagram_rate_per_peer": _Key(whole_number(1, 10_000_000), "1000", transports=("udp",)),
    "datagram_rate": _Key(whole_number(1, 10_000_000), "10000", transports=("udp",)),
    "byte_rate": _Key(size_within(1, 1 << 40), "16M", transports=("udp",)),
    # The kernel's own floor is about 2 KiB and SO_RCVBUF takes an int: 1 GiB is far beyond any use.
    "receive_buffer": _Key(optional_size_within(4096, 1 << 30), "", transports=("udp",)),
    "reuse_port": _Key(parse_boolean, "no"),
    "peer_prefix_ipv4": _Key(whole_number(0, 32), str(DEFAULT_PREFIX_IPV4)),
    "peer_prefix_ipv6": _Key(whole_number(0, 128), str(DEFAULT_PREFIX_IPV6)),
    "proxy_protocol": _Key(parse_boolean, "no", transports=("tcp",)),
    "trusted_proxies": _Key(parse_networks, "127.0.0.0/8, ::1", transports=("tcp",)),
}


# -- the file --------------------------------------------------------------


def _line_index(text: str) -> dict[tuple[str | None, str | None], int]:
    """
    Map (section, key) and (section, None) to the line they start on.

    configparser forgets where things were; this remembers it so that every
    problem can name its line. It follows configparser's own rules closely
    enough for that: headers in brackets, C{key = value} lines, comments and
    indented continuation lines.
    """
    index: dict[tuple[str | None, str | None], int] = {}
    section = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or line[0].isspace():
            continue
        header = re.fullmatch(r"\[(.*)\]", stripped)
        if header:
            section = header.group(1)
            index.setdefault((section, None), number)
        elif "=" in stripped:
            key = stripped.split("=", 1)[0].strip().lower()
            index.setdefault((section, key), number)
    return index


class _Reader:
    """Collects problems while turning a parsed INI file into L{Settings}."""

    def __init__(
        self, path: str, parser: configparser.RawConfigParser, text: str, instance: str | None
    ) -> None:
        self.path = path
        self.instance = instance
        self.parser = parser
        self.lines = _line_index(text)
        self.problems: list[Problem] = []

    def problem(self, message: str, section: str | None = None, key: str | None = None) -> None:
        line = self.lines.get((section, key)) or self.lines.get((section, None))
        self.problems.append(Problem(self.path, message, line, section, key))

    def values(
        self, section: str, keys: dict[str, _Key], protocol: str | None = None, transport: str | None = None
    ) -> dict[str, Any]:
        """Convert every key of C{section} that C{keys} knows, with defaults."""
        given = self.parser[section] if self.parser.has_section(section) else {}
        for key in given:
            if key not in keys:
                self.problem(self._unknown_key_message(key, keys), section, key)
            elif protocol is not None and protocol not in keys[key].protocols:
                self.problem(
                    f"applies only to protocol = {' or '.join(keys[key].protocols)}, "
                    f"not {protocol}; remove it",
                    section,
                    key,
                )
            elif transport is not None and transport not in keys[key].transports:
                self.problem(
                    f"applies only to transport = {' or '.join(keys[key].transports)}, "
                    f"not {transport}; remove it",
                    section,
                    key,
                )
        result: dict[str, Any] = {}
        for key, spec in keys.items():
            text = given.get(key)
            if text is None:
                if spec.default is None:
                    self.problem(f"missing; every [{LISTENER_PREFIX}NAME] needs it", section, key)
                    continue
                text = spec.default
            try:
                result[key] = spec.convert(text.strip())
            except ValueError as e:
                self.problem(str(e), section, key)
        return result

    def _known(self, section: str, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
        """The value of C{key} if it is one of C{choices} (its own problems are reported elsewhere)."""
        text = self.parser[section].get(key, default)
        value = text.strip().lower() if text is not None else None
        return value if value in choices else None

    def _unknown_key_message(self, key: str, keys: dict[str, _Key]) -> str:
        message = f"unknown key {key!r}"
        if keys is _LISTENER_KEYS and key in _GLOBAL_KEYS:
            return message + f"; it belongs in the [{GLOBAL_SECTION}] section"
        if keys is _GLOBAL_KEYS and key in _LISTENER_KEYS:
            return message + f"; it belongs in a [{LISTENER_PREFIX}NAME] section"
        hint = did_you_mean(key, keys)
        return message + (hint or f"; known keys: {', '.join(keys)}")

    def settings(self) -> Settings:
        for section in self.parser.sections():
            self._check_section_name(section)
        general = self.values(GLOBAL_SECTION, _GLOBAL_KEYS)
        listeners = []
        for section in self.parser.sections():
            if not section.startswith(LISTENER_PREFIX):
                continue
            name = section[len(LISTENER_PREFIX) :]
            protocol = self._known(section, "protocol", PROTOCOLS, None)
            transport = self._known(section, "transport", TRANSPORTS, "tcp")
            values = self.values(section, _LISTENER_KEYS, protocol, transport)
            if protocol == "bytecount" and transport == "udp":
                self.problem(
                    "bytecount needs a connection to close when the payload is done; use transport = tcp, "
                    "or protocol = echo for UDP",
                    section,
                    "transport",
                )
            elif values.get("proxy_protocol") and values.get("trusted_proxies") == ():
                self.problem(
                    "is empty, so with proxy_protocol = yes every connection would be refused; "
                    "list the addresses or networks of the balancers that send PROXY headers",
                    section,
                    "trusted_proxies",
                )
            elif _LISTENER_NAME.fullmatch(name) and len(values) == len(_LISTENER_KEYS):
                listeners.append(ListenerSettings(name=name, **values))
        if not any(s.startswith(LISTENER_PREFIX) for s in self.parser.sections()):
            self.problem(
                f"no [{LISTENER_PREFIX}NAME] section: echod would serve nothing; "
                "add one, e.g. [listener:echo] with protocol = echo and port = 7"
            )
        self._check_conflicts(listeners)
        if general.get("metrics") is not None and self.instance is not None:
            try:
                general["metrics"] = instance_metrics(general["metrics"], self.instance)
            except ValueError as e:
                self.problem(str(e), GLOBAL_SECTION, "metrics")
        self._check_metrics(general.get("metrics"), listeners)
        if self.problems:
            raise ConfigError(self.problems)
        return Settings(path=self.path, listeners=tuple(listeners), instance=self.instance, **general)

    def _check_section_name(self, section: str) -> None:
        if section == GLOBAL_SECTION:
            return
        if section.startswith(LISTENER_PREFIX):
            if not _LISTENER_NAME.fullmatch(section[len(LISTENER_PREFIX) :]):
                self.problem("a listener name is 1 to 64 letters, digits, '_', '.' or '-'", section)
            return
        prefix, colon, rest = section.partition(":")
        if colon and difflib.get_close_matches(prefix, [LISTENER_PREFIX[:-1]], cutoff=0.6):
            hint = f"; did you mean [{LISTENER_PREFIX}{rest}]?"
        else:
            hint = did_you_mean(section, [GLOBAL_SECTION])
            hint = hint.replace(f"'{GLOBAL_SECTION}'", f"[{GLOBAL_SECTION}]")
        self.problem(
            f"unknown section{hint or f'; expected [{GLOBAL_SECTION}] or [{LISTENER_PREFIX}NAME]'}",
            section,
        )

    def _check_conflicts(self, listeners: list[ListenerSettings]) -> None:
        for i, first in enumerate(listeners):
            for second in listeners[i + 1 :]:
                if _overlap(first, second):
                    self.problem(
                        f"listens on the same {second.transport} port {second.port} as "
                        f"[{LISTENER_PREFIX}{first.name}] ({first.address} and {second.address} "
                        "overlap); give one of them another port or address",
                        LISTENER_PREFIX + second.name,
                        "port",
                    )

    def _check_metrics(self, metrics: tuple[str, int] | None, listeners: list[ListenerSettings]) -> None:
        if metrics is None:
            return
        address, port = metrics
        for listener in listeners:
            if listener.transport == "tcp" and _addresses_overlap(
                address, port, listener.address, listener.port
            ):
                whose = f" (echod@{self.instance}'s metrics)" if self.instance is not None else ""
                self.problem(
                    f"{host_port(address, port)}{whose} is where [{LISTENER_PREFIX}{listener.name}] listens; "
                    "give the metrics another port",
                    GLOBAL_SECTION,
                    "metrics",
                )


def _overlap(a: ListenerSettings, b: ListenerSettings) -> bool:
    """Whether two listeners would try to bind the same socket address."""
    if a.transport != b.transport:
        return False
    return _addresses_overlap(a.address, a.port, b.address, b.port)


def _addresses_overlap(a: str, a_port: int, b: str, b_port: int) -> bool:
    """Whether sockets bound to C{a}:C{a_port} and C{b}:C{b_port} (same transport) would clash."""
    if a_port != b_port or a_port == 0:
        return False
    x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    if x == y or str(x) == "::" or str(y) == "::":
        return True
    return (x.version == y.version == 4) and (x.is_unspecified or y.is_unspecified)


def parse(text: str, path: str = "<string>", instance: str | None = None) -> Settings:
    """
    Parse configuration C{text}; C{path} is only used to name it in problems,
    C{instance} is the echod@ instance it is read for (L{echod.instances}).

    @raise ConfigError: listing every problem found.
    """
    parser = configparser.RawConfigParser(
        delimiters=("=",),
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=("#", ";"),
        strict=True,
        empty_lines_in_values=False,
        default_section="\x00no default section",
        interpolation=None,
    )
    try:
        parser.read_string(text, source=path)
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(
            [Problem(path, f"{e.line.strip()!r} comes before any [section] header", e.lineno)]
        ) from None
    except configparser.DuplicateSectionError as e:
        raise ConfigError(
            [Problem(path, "this section appears twice; merge them", e.lineno, e.section)]
        ) from None
    except configparser.DuplicateOptionError as e:
        raise ConfigError(
            [Problem(path, "this key appears twice in the section; keep one", e.lineno, e.section, e.option)]
        ) from None
    except configparser.ParsingError as e:
        raise ConfigError(
            [
                Problem(
                    path, f"{text.splitlines()[number - 1].strip()!r} is not a 'key = value' line", number
                )
                for number, _ in e.errors
            ]
        ) from None
    return _Reader(path, parser, text, instance).settings()


def load(path: str = DEFAULT_PATH, instance: str | None = None) -> Settings:
    """
    Read and parse the configuration file at C{path}, for echod@C{instance} if given.

    @raise ConfigError: if it cannot be read or is not valid.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError([Problem(path, "no such file; create it or name another with -c FILE")]) from None
    except PermissionError:
        raise ConfigError(
            [Problem(path, f"permission denied reading it (running as uid {os.getuid()})")]
        ) from None
    except IsADirectoryError:
        raise ConfigError([Problem(path, "is a directory, not a configuration file")]) from None
    except UnicodeDecodeError as e:
        line = _line_of_offset(path, e.start)
        raise ConfigError([Problem(path, "is not valid UTF-8 text", line)]) from None
    except OSError as e:
        raise ConfigError([Problem(path, f"cannot be read: {e.strerror}")]) from None
    return parse(text, path, instance)


def _line_of_offset(path: str, offset: int) -> int | None:
    """The 1-based line holding byte C{offset} of the file at C{path}."""
    try:
        with open(path, "rb") as f:
            return f.read(offset).count(b"\n") + 1
    except OSError:
        return None
