"""
The map of the code, held: which part of echod may import which.

Every module's imports are read from its source (those under
C{TYPE_CHECKING} too, and those inside functions), so that the layers cannot
erode one import at a time:

- the leaves (L{LEAVES}) import only the standard library and each other;
- accounting imports only the leaves;
- protocols never import the daemon, systemd, the metrics or the probe;
- systemd and the metrics never import protocols or the daemon;
- the probe imports only units, addresses and C{_twisted}, besides itself;
- only the command line and C{echod.tac} import the daemon;
- no module imports itself back through others.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "echod"
LEAVES = {"units", "addresses", "sockets", "sockopts", "ancillary", "config", "endpoints", "instances"}
WINGS = {"accounting", "protocols", "systemd", "metrics", "daemon", "probe"}


def module_name(path: Path) -> str:
    """C{echod/probe/run.py} → C{echod.probe.run}; C{echod.tac} is C{echod.tac}."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def sources() -> dict[str, Path]:
    found = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found["echod.tac"] = PACKAGE / "echod.tac"
    return found


MODULES = sources()


def imported(path: Path) -> Iterator[str]:
    """Every echod module C{path} imports, anywhere in it."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from echod.probe import run` imports echod.probe.run; `from echod.x import Name`, echod.x.
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                for alias in node.names
            ]
        else:
            continue
        yield from (name for name in names if name == "echod" or name.startswith("echod."))


def part(module: str) -> str:
    """The part of the map C{module} is in: a wing, C{leaf}, C{_twisted}, or the module's own name."""
    pieces = module.split(".")
    if len(pieces) < 2:
        return "echod"
    if pieces[1] in WINGS:
        return pieces[1]
    return "leaf" if pieces[1] in LEAVES else pieces[1]


GRAPH = {module: sorted(set(imported(path)) - {"echod"}) for module, path in MODULES.items()}

#: What each part may import, besides itself; None: anything.
ALLOWED: dict[str, set[str] | None] = {
    "leaf": set(),
    "_twisted": {"leaf"},
    "accounting": {"leaf"},
    "protocols": {"leaf", "_twisted", "accounting"},
    "systemd": {"leaf", "_twisted", "accounting"},
    "metrics": {"leaf", "_twisted", "accounting"},
    "probe": {"_twisted", "echod.units", "echod.addresses"},
    "daemon": {"leaf", "_twisted", "accounting", "protocols", "systemd", "metrics"},
    "cli": None,
    "tac": None,
    "__main__": {"cli"},
    "echod": set(),
}


def breaches() -> list[str]:
    found = []
    for module, targets in GRAPH.items():
        allowed = ALLOWED[part(module)]
        if allowed is None:
            continue
        for target in targets:
            if part(target) == part(module) or part(target) in allowed or target in allowed:
                continue
            found.append(f"{module} imports {target}")
    return found


def test_every_module_is_on_the_map():
    assert {part(module) for module in MODULES} <= set(ALLOWED), sorted(MODULES)


def test_each_part_imports_only_what_is_below_it():
    assert breaches() == []


def cycle() -> list[str] | None:
    """One import cycle among echod's modules, if there is any."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in GRAPH.get(module, ()):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in GRAPH:
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_module_imports_itself_back():
    assert cycle() is None


@pytest.mark.parametrize(
    ("module", "target", "allowed"),
    [
        ("echod.protocols.echo", "echod.daemon.service", False),
        ("echod.probe.run", "echod.accounting.stats", False),
        ("echod.units", "echod.accounting.stats", False),
        ("echod.metrics.endpoint", "echod.protocols.udp", False),
        ("echod.systemd.notify", "echod.daemon.status", False),
        ("echod.probe.run", "echod.units", True),
        ("echod.probe.run", "echod.probe.tally", True),
        ("echod.protocols.udp", "echod.accounting.rates", True),
        ("echod.cli", "echod.daemon.service", True),
    ],
)
def test_the_rules_tell_a_breach(monkeypatch, module, target, allowed):
    monkeypatch.setattr(__import__(__name__, fromlist=["GRAPH"]), "GRAPH", {module: [target]})
    assert breaches() == ([] if allowed else [f"{module} imports {target}"])


def test_a_cycle_is_found(monkeypatch):
    graph = {"echod.probe.run": ["echod.probe.channels"], "echod.probe.channels": ["echod.probe.run"]}
    monkeypatch.setattr(__import__(__name__, fromlist=["GRAPH"]), "GRAPH", graph)
    assert cycle() == ["echod.probe.run", "echod.probe.channels", "echod.probe.run"]


def test_imports_are_read_under_type_checking_and_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from echod.probe.run import Run\n"
        "def f():\n    from echod.probe import tally\n"
    )
    assert sorted(imported(source)) == ["echod.probe.run", "echod.probe.tally"]
