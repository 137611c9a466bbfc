"""
The man pages and the shipped configuration keep step with the code.

The keys, sections and values come from echod.config's own tables and the
exit statuses from echod's C{EX_*} constants, so a key or a status added to
the code without being documented fails here.

In echod.conf(5) a key is documented by a C{.TP} entry whose tag starts with
the key's name (C{.BI max_connections " = number"}), under the C{.SH} of its
section. Under C{[listener:NAME]}, the C{.SS} heading of a key names the
protocol or transport it is restricted to ("TCP listeners", "bytecount
listeners"), or none ("Every listener"). Each entry says "Required." or
"Default: VALUE". In echod(8), each status is a C{.TP} entry, C{.B 78}, in
EXIT STATUS.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import echod
from echod import cli, config
from echod.probe import options as probeoptions
from echod.probe import output as probeoutput
from echod.probe import tally as probestats

ROOT = Path(__file__).resolve().parent.parent
CONF_PAGE = ROOT / "man" / "echod.conf.5"
DAEMON_PAGE = ROOT / "man" / "echod.8"
SHIPPED_CONF = ROOT / "etc" / "echod.conf"

GLOBAL_HEADING = f"[{config.GLOBAL_SECTION}]"
LISTENER_HEADING = f"[{config.LISTENER_PREFIX}NAME]"
SECTION_KEYS = {GLOBAL_HEADING: config._GLOBAL_KEYS, LISTENER_HEADING: config._LISTENER_KEYS}
ALL_KEYS = {**config._GLOBAL_KEYS, **config._LISTENER_KEYS}

_ESCAPES = {r"\-": "-", r"\&": "", r"\%": "", r"\(aq": "'", r"\(dq": '"', r"\e": "\\", r"\ ": " "}
_FONT = re.compile(r"\\f(?:[BIRP]|\[[A-Z]*\])")
_ARGUMENT = re.compile(r'"([^"]*)"|(\S+)')


def plain(text: str) -> str:
    """Roff text without font changes and with the common escapes resolved."""
    text = _FONT.sub("", text)
    for escape, char in _ESCAPES.items():
        text = text.replace(escape, char)
    return text


def line_text(line: str) -> str:
    """What a line of roff prints: a font macro's arguments run together, or the text itself."""
    if not line.startswith("."):
        return plain(line)
    macro, _, rest = line.partition(" ")
    args = [quoted if quoted or bare == "" else bare for quoted, bare in _ARGUMENT.findall(rest)]
    if macro in (".B", ".I", ".SM"):
        return plain(" ".join(args))
    if macro in (".BI", ".BR", ".IB", ".IR", ".RB", ".RI"):
        return plain("".join(args))
    return ""


@dataclass
class Entry:
    """One C{.TP} entry: where it is, its tag and its paragraph, as printed."""

    section: str
    subsection: str
    tag: str
    body: str

    @property
    def name(self) -> str:
        return self.tag.split(" ", 1)[0]


def entries(page: Path) -> list[Entry]:
    """Every C{.TP} entry of C{page}, in order."""
    found: list[Entry] = []
    section = subsection = ""
    current: Entry | None = None
    lines = page.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        macro = line.split(" ", 1)[0]
        if macro in (".SH", ".SS"):
            title = plain(line_text(".B" + line[3:]))
            section, subsection = (title, "") if macro == ".SH" else (section, title)
        if macro in (".SH", ".SS", ".TP", ".PP", ".LP", ".P"):
            current = None
        if macro == ".TP":
            current = Entry(section, subsection, line_text(lines[number + 1]), "")
            found.append(current)
        elif current is not None and number > 0 and lines[number - 1] != ".TP":
            current.body = " ".join(filter(None, (current.body, line_text(line))))
    return found


def headings(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    return {plain(title.strip('"')) for title in re.findall(r"^\.S[HS] (.*)$", text, re.MULTILINE)}


def documented_keys() -> dict[str, list[Entry]]:
    """The C{.TP} entries of the key sections of echod.conf(5), by the name their tag starts with."""
    keys: dict[str, list[Entry]] = {}
    for entry in entries(CONF_PAGE):
        if entry.section in SECTION_KEYS:
            keys.setdefault(entry.name, []).append(entry)
    return keys


def test_every_section_has_its_heading():
    assert {GLOBAL_HEADING, LISTENER_HEADING} <= headings(CONF_PAGE)


@pytest.mark.parametrize("key", sorted(ALL_KEYS))
def test_every_key_is_documented_once_in_its_section(key):
    documented = documented_keys().get(key, [])
    assert documented, f"{key} is a configuration key but {CONF_PAGE.name} has no '.TP' entry for it"
    assert len(documented) == 1, f"{key} is documented {len(documented)} times in {CONF_PAGE.name}"
    section = GLOBAL_HEADING if key in config._GLOBAL_KEYS else LISTENER_HEADING
    assert documented[0].section == section, f"{key} belongs under .SH {section}"


def test_every_documented_key_is_a_key_of_its_section():
    for name, documented in documented_keys().items():
        for entry in documented:
            assert name in SECTION_KEYS[entry.section], (
                f"{CONF_PAGE.name} documents {name!r} under {entry.section}, "
                f"which has no such key: {', '.join(SECTION_KEYS[entry.section])}"
            )


@pytest.mark.parametrize("key", sorted(config._LISTENER_KEYS))
def test_every_listener_key_is_under_the_heading_of_what_it_applies_to(key):
    spec = config._LISTENER_KEYS[key]
    restricted = set()
    if set(spec.protocols) != set(config.PROTOCOLS):
        restricted |= set(spec.protocols)
    if set(spec.transports) != set(config.TRANSPORTS):
        restricted |= set(spec.transports)
    (entry,) = documented_keys()[key]
    named = set(entry.subsection.lower().split()) & set(config.PROTOCOLS + config.TRANSPORTS)
    assert named == restricted, (
        f"{key} applies to {' and '.join(sorted(restricted)) or 'every listener'}, "
        f"but is documented under .SS {entry.subsection or '(none)'}"
    )


@pytest.mark.parametrize("key", sorted(ALL_KEYS))
def test_every_key_says_its_default_or_that_it_is_required(key):
    default = ALL_KEYS[key].default
    (entry,) = documented_keys()[key]
    expected = "Required." if default is None else f"Default: {default or 'off'}"
    assert expected in entry.body, f"{key}: {expected!r} not in {entry.body!r}"


@pytest.mark.parametrize("key", sorted(k for k, spec in ALL_KEYS.items() if hasattr(spec.convert, "options")))
def test_every_choice_lists_all_its_values(key):
    (entry,) = documented_keys()[key]
    words = set(re.findall(r"[\w-]+", entry.tag))
    missing = set(ALL_KEYS[key].convert.options) - words
    assert not missing, f"{key}: the tag {entry.tag!r} does not list {', '.join(sorted(missing))}"


def test_the_shipped_configuration_mentions_every_key():
    text = SHIPPED_CONF.read_text(encoding="utf-8")
    mentioned = set(re.findall(r"^[#;]?\s*([a-z_][a-z0-9_]*)\b", text, re.MULTILINE))
    missing = set(ALL_KEYS) - mentioned
    assert not missing, f"{SHIPPED_CONF.name} does not mention {', '.join(sorted(missing))}"


def test_the_shipped_configuration_sets_only_real_keys():
    text = SHIPPED_CONF.read_text(encoding="utf-8")
    set_keys = set(re.findall(r"^[#;]?\s*([a-z_][a-z0-9_]*)\s*=", text, re.MULTILINE))
    assert set_keys <= set(ALL_KEYS), set_keys - set(ALL_KEYS)


def exit_constants() -> dict[str, int]:
    """Every C{EX_*} constant of every echod module: the statuses echod exits with on errors."""
    found: dict[str, int] = {}
    for module in pkgutil.walk_packages(echod.__path__, "echod."):
        if module.name == "echod.__main__":
            continue
        namespace = vars(importlib.import_module(module.name))
        found.update({k: v for k, v in namespace.items() if k.startswith("EX_") and isinstance(v, int)})
    return found


def command_line_status(argv: list[str]) -> int:
    """The status C{echod ARGV} exits with, for arguments that end it before it does anything."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        with pytest.raises(SystemExit) as caught:
            cli.main(argv)
    return caught.value.code


def exit_status_entries() -> dict[int, Entry]:
    found = {}
    for entry in entries(DAEMON_PAGE):
        if entry.section == "EXIT STATUS":
            assert entry.name.isdigit(), f"EXIT STATUS has an entry {entry.tag!r} that is no status"
            found[int(entry.name)] = entry
    return found


def test_exit_constants_are_found():
    assert {"EX_CONFIG", "EX_OSERR", "EX_CANTCREAT"} <= set(exit_constants())


def test_every_exit_status_is_documented():
    documented = exit_status_entries()
    for name, status in exit_constants().items():
        assert status in documented, f"{name} ({status}) is not in the EXIT STATUS of {DAEMON_PAGE.name}"
        assert name in documented[status].body, f"the entry for {status} does not name {name}"
    success, usage = command_line_status(["--version"]), command_line_status(["--no-such-option"])
    assert {success, usage} <= set(documented)


def test_every_documented_exit_status_is_one_echod_exits_with():
    statuses = set(exit_constants().values())
    statuses |= {command_line_status(["--version"]), command_line_status(["--no-such-option"])}
    assert set(exit_status_entries()) <= statuses


def exported_metrics() -> set[str]:
    """The name of every metric family a scrape of a daemon with a TCP and a UDP listener has."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from echod.accounting.stats import ListenerStats
    from echod.metrics.collector import DaemonView, ListenerView, make_registry

    listeners = [
        ListenerView(name, "echo", transport, "::", 7, ListenerStats(), 0, 0)
        for name, transport in (("t", "tcp"), ("u", "udp"))
    ]
    registry = make_registry(lambda: DaemonView(listeners, True, 0.0, {"bind": 0}))
    text = generate_latest(registry).decode()
    return {family.name for family in text_string_to_metric_families(text)}


@pytest.mark.parametrize("document", [CONF_PAGE, ROOT / "README.md"], ids=["echod.conf.5", "README"])
def test_every_metric_is_documented(document):
    text = plain(document.read_text(encoding="utf-8"))
    names = exported_metrics()
    assert len(names) > 20
    missing = sorted(
        name
        for name in names
        if not re.search(rf"\b{re.escape(name)}(_total|_info)?\b", text)
        and not (name.startswith("process_") and "process_*" in text)
    )
    assert not missing, f"{document.name} does not document {', '.join(missing)}"


# -- echod-probe(1) ---------------------------------------------------------------------------

PROBE_PAGE = ROOT / "man" / "echod-probe.1"


def probe_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="echod")
    return cli.add_probe_command(parser.add_subparsers())


def probe_page_tags() -> dict[str, set[str]]:
    """The words of every C{.TP} (and C{.TQ}) tag of echod-probe(1), by section."""
    tags: dict[str, set[str]] = {}
    section = ""
    lines = PROBE_PAGE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line.startswith(".SH "):
            section = plain(line_text(".B" + line[3:]))
        if line in (".TP", ".TQ"):
            tags.setdefault(section, set()).update(re.findall(r"[-\w]+", line_text(lines[number + 1])))
    return tags


def test_every_probe_option_is_documented_in_echod_probe_1():
    documented = probe_page_tags()
    words = documented.get("OPTIONS", set()) | documented.get("MODES", set())
    for action in probe_parser()._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help"):
                assert flag in words, f"{flag} has no .TP entry in the OPTIONS or MODES of {PROBE_PAGE.name}"


def test_every_probe_exit_status_is_documented_in_echod_probe_1():
    statuses = {v for k, v in vars(probestats).items() if k.startswith("STATUS_")}
    assert statuses == {0, 1, 2, 3}
    documented = {int(word) for word in probe_page_tags()["EXIT STATUS"]}
    assert documented == statuses
    usage = command_line_status(["probe", "--no-such-option", "192.0.2.1"])
    assert usage == probestats.STATUS_ERROR


def test_every_key_of_the_probe_json_is_documented_in_echod_probe_1():
    text = plain(PROBE_PAGE.read_text(encoding="utf-8"))
    options = probeoptions.make_options("192.0.2.1", mode="connect")
    report = probeoutput.json_report(options, "192.0.2.1", probestats.Tally(), 0.0, None)
    keys = set(report) | set(report["rtt_ms"])
    missing = {key for key in keys if not re.search(rf"^\.BR? {re.escape(key)}\b", text, re.MULTILINE)}
    assert not missing, f"{PROBE_PAGE.name} does not document the JSON keys {', '.join(sorted(missing))}"


def test_echod_8_points_to_echod_probe_1():
    text = DAEMON_PAGE.read_text(encoding="utf-8")
    assert ".BR echod\\-probe (1)" in text
    assert "probe" in {entry.name for entry in entries(DAEMON_PAGE) if entry.section == "COMMANDS"}
