"""
The map of the code, held: which part of echod may import which.

Every module's imports are read from its source (those under
C{TYPE_CHECKING} too, and those inside functions), so that the layers cannot
erode one import at a time:

- the leaves (L{LEAVES}) import only the standard library and each other;
- accounting imports only the leaves and C{_twisted} (the log of a TCP port,
  which L{echod.accounting.descriptors} listens to, is one of Twisted's insides);
- protocols never import the daemon, systemd, the metrics or the probe;
- systemd and the metrics never import protocols or the daemon;
- the probe imports only units, addresses, sockopts, ancillary, the STAMP
  codec (C{echod.stamp}, a package of leaves) and C{_twisted}, besides itself
  (the socket options it sets and the errors it reads off its sockets are the
  leaves' Linux constants and parsers);
- only the command line and C{echod.tac} import the daemon;
- no module imports itself back through others.

And C{echod._twisted} is the one module that touches the private attributes of
Twisted's and prometheus_client's objects (see L{library_insides}).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "echod"
LEAVES = {
    "units",
    "addresses",
    "sockets",
    "sockopts",
    "ancillary",
    "config",
    "endpoints",
    "instances",
    "stamp",
}
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

#: What each part may import, besides itself: parts, or modules and packages by name; None: anything.
ALLOWED: dict[str, set[str] | None] = {
    "leaf": set(),
    "_twisted": {"leaf"},
    "accounting": {"leaf", "_twisted"},
    "protocols": {"leaf", "_twisted", "accounting"},
    "systemd": {"leaf", "_twisted", "accounting"},
    "metrics": {"leaf", "_twisted", "accounting"},
    "probe": {
        "_twisted",
        "echod.units",
        "echod.addresses",
        "echod.sockopts",
        "echod.ancillary",
        "echod.stamp",
    },
    "daemon": {"leaf", "_twisted", "accounting", "protocols", "systemd", "metrics"},
    "cli": None,
    "tac": None,
    "__main__": {"cli"},
    "echod": set(),
}


def named(target: str, allowed: set[str]) -> bool:
    """Whether C{allowed} names the module C{target}, or a package it is in."""
    return any(target == name or target.startswith(name + ".") for name in allowed)


def breaches() -> list[str]:
    found = []
    for module, targets in GRAPH.items():
        allowed = ALLOWED[part(module)]
        if allowed is None:
            continue
        for target in targets:
            if part(target) == part(module) or part(target) in allowed or named(target, allowed):
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
        ("echod.probe.run", "echod.sockets", False),
        ("echod.probe.run", "echod.config", False),
        ("echod.units", "echod.accounting.stats", False),
        ("echod.metrics.endpoint", "echod.protocols.udp", False),
        ("echod.systemd.notify", "echod.daemon.status", False),
        ("echod.probe.run", "echod.units", True),
        ("echod.probe.sockets", "echod.sockopts", True),
        ("echod.probe.datagram", "echod.ancillary", True),
        ("echod.probe.run", "echod.probe.tally", True),
        ("echod.protocols.udp", "echod.accounting.rates", True),
        ("echod.cli", "echod.daemon.service", True),
        ("echod.probe.run", "echod.stamp.packets", True),
        ("echod.protocols.udp", "echod.stamp.reflection", True),
        ("echod.stamp.packets", "echod.protocols.udp", False),
        ("echod.stamp.clock", "echod.accounting.stats", False),
        ("echod.probe.run", "echod.stampede", False),
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


# -- the libraries' insides, in _twisted.py alone --------------------------------------------------

#: The libraries whose private attributes only L{INSIDES} may touch.
LIBRARIES = ("twisted", "prometheus_client")
INSIDES = "echod._twisted"
_PRIVATE_NAME = re.compile(r"\b_[A-Za-z]\w*")
_ATTRIBUTE_CALLS = {"getattr", "setattr", "hasattr", "delattr"}


def is_private(name: str) -> bool:
    """C{_x}; not C{__x__}, nor C{__x}, which Python mangles per class so that it cannot collide."""
    return name.startswith("_") and not name.startswith("__")


def of_library(dotted: str) -> bool:
    return dotted.split(".")[0] in LIBRARIES


@functools.cache
def private_names_in(source: Path) -> frozenset[str]:
    return frozenset(_PRIVATE_NAME.findall(source.read_text(encoding="utf-8", errors="replace")))


@functools.cache
def library_privates() -> frozenset[str]:
    """Every private name that occurs anywhere in the libraries' installed sources: all they might own."""
    names: set[str] = set()
    for library in LIBRARIES:
        for source in Path(importlib.util.find_spec(library).origin).parent.rglob("*.py"):
            names |= private_names_in(source)
    return frozenset(names)


def privates_of_library_bases(cls: type) -> frozenset[str]:
    """The private names in the sources of C{cls}'s bases that are the libraries' classes."""
    names: set[str] = set()
    for base in cls.__mro__[1:]:
        if of_library(base.__module__):
            names |= private_names_in(Path(inspect.getsourcefile(base)))
    return frozenset(names)


def imported_class(origin: str) -> type:
    """
    The class C{origin} (C{echod._twisted.PacedPort}) names, when it is an
    echod class (a library's derived class, reached by its echod name);
    C{object} for anything else (a module, a function, another package's).
    """
    if not (origin == "echod" or origin.startswith("echod.")):
        return object
    pieces = origin.split(".")
    for cut in range(len(pieces), 0, -1):
        try:
            found = importlib.import_module(".".join(pieces[:cut]))
        except ImportError:
            continue
        try:
            found = functools.reduce(getattr, pieces[cut:], found)
        except AttributeError:
            return object
        return found if isinstance(found, type) else object
    return object


def import_bindings(tree: ast.AST) -> dict[str, str]:
    """Each name the module's imports bind, and what it is bound to (C{tcp}: C{twisted.internet.tcp})."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def attribute_uses(tree: ast.AST) -> Iterator[tuple[ast.expr, str, int]]:
    """Each private attribute the code names, getattr()'s and the like too: C{(object, name, line)}."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            yield node.value, node.attr, node.lineno
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _ATTRIBUTE_CALLS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
        ):
            yield node.args[0], node.args[1].value, node.lineno


def dotted(node: ast.expr) -> list[str] | None:
    """C{a.b.c} as C{["a", "b", "c"]}; None for anything but names and attributes of them."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute) and (inner := dotted(node.value)) is not None:
        return [*inner, node.attr]
    return None


def classes(tree: ast.Module, outer: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], ast.ClassDef]]:
    """The module's classes, at its top level and inside classes, each with its path of names."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            yield (*outer, node.name), node
            yield from classes(node, (*outer, node.name))


def own_private_names(node: ast.ClassDef) -> Iterator[tuple[str, int]]:
    """The private names a class defines in its body or uses on C{self} or C{cls}."""
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and is_private(item.name):
            yield item.name, item.lineno
        targets = item.targets if isinstance(item, ast.Assign) else [getattr(item, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name) and is_private(target.id):
                yield target.id, item.lineno
    for value, name, line in attribute_uses(node):
        if isinstance(value, ast.Name) and value.id in ("self", "cls"):
            yield name, line


def library_insides(path: Path, load: Callable[[], ModuleType]) -> list[str]:
    """
    Where the module at C{path} touches a private attribute of Twisted's or
    prometheus_client's: a private name it imports from them; a private
    attribute of one of their modules or classes, or of any other object
    (a port, a transport, C{super()}) when the name is one the libraries'
    sources use; in a class derived from one of their classes (C{load()}
    gives the module, to find the bases), a private name the class
    defines or uses on itself that occurs in those bases' sources: an
    override or a use of their insides, or a collision with them.

    What it cannot see: a name built at run time (C{getattr(x, name)}), and
    the libraries' public-looking internals (C{transport.dataBuffer}).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and of_library(node.module):
            imported_names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            imported_names = [alias.name for alias in node.names if of_library(alias.name)]
        else:
            continue
        found += [
            f"{where}:{node.lineno}: imports {name}"
            for name in imported_names
            if any(map(is_private, name.split(".")))
        ]
    bound = import_bindings(tree)
    for value, name, line in attribute_uses(tree):
        parts = dotted(value)
        if parts is not None and parts[0] in ("self", "cls") and len(parts) == 1:
            continue  # the class's own, or its bases': below
        if parts is not None and parts[0] in bound:
            origin = ".".join([bound[parts[0]], *parts[1:]])
            if of_library(origin) or name in privates_of_library_bases(imported_class(origin)):
                found.append(f"{where}:{line}: {origin}.{name}")
            continue  # another library's, or echod's own
        if name in library_privates():
            found.append(f"{where}:{line}: {ast.unparse(value)}.{name}")
    if any(True for _ in classes(tree)):
        module = load()
        for names, node in classes(tree):
            cls = functools.reduce(getattr, names, module)
            theirs = privates_of_library_bases(cls)
            found += [
                f"{where}:{line}: {'.'.join(names)}.{name}, a name its bases of {LIBRARIES} use"
                for name, line in own_private_names(node)
                if name in theirs
            ]
    return found


def test_only_twisted_touches_the_insides_of_twisted_and_prometheus_client():
    found = []
    for module, path in MODULES.items():
        if module not in (INSIDES, "echod.tac"):
            found += library_insides(path, functools.partial(importlib.import_module, module))
    assert found == []


def test_echod_tac_defines_no_class_the_insides_check_would_have_to_import():
    assert not list(classes(ast.parse(MODULES["echod.tac"].read_text(encoding="utf-8"))))


def snippet(tmp_path: Path, text: str) -> list[str]:
    """L{library_insides} of a module with C{text} in it."""
    path = tmp_path / "snippet.py"
    path.write_text(text)

    def load() -> ModuleType:
        spec = importlib.util.spec_from_file_location("snippet", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return [finding.split(": ", 1)[1] for finding in library_insides(path, load)]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (
            "from twisted.internet.endpoints import _SystemdParser\n",
            ["imports twisted.internet.endpoints._SystemdParser"],
        ),
        ("import twisted.internet._sslverify\n", ["imports twisted.internet._sslverify"]),
        (
            "from twisted.internet import tcp\nmake = tcp.Port._fromListeningDescriptor\n",
            ["twisted.internet.tcp.Port._fromListeningDescriptor"],
        ),
        ("def f(port):\n    port._logger = None\n", ["port._logger"]),
        ("def f(port):\n    return getattr(port, '_logger', None)\n", ["port._logger"]),
        ("def f(self):\n    return self.transport._tempDataLen\n", ["self.transport._tempDataLen"]),
        (
            "from prometheus_client import ProcessCollector\n"
            "class C(ProcessCollector):\n    def _boot_time(self):\n        return super()._boot_time()\n",
            ["super()._boot_time", "C._boot_time, a name its bases of ('twisted', 'prometheus_client') use"],
        ),
        (
            "from twisted.internet.protocol import Protocol\n"
            "class P(Protocol):\n    def f(self):\n        return self._echod_only\n",
            [],
        ),
        (
            "from echod._twisted import PacedPort\nmake = PacedPort._fromListeningDescriptor\n",
            ["echod._twisted.PacedPort._fromListeningDescriptor"],
        ),
        ("from echod import _twisted\nagain = _twisted._READ_AGAIN\n", []),
        ("import argparse\nkind = argparse._SubParsersAction\n", []),
        ("class Plain:\n    _logger = None\n    def f(self):\n        return self._logger\n", []),
        ("def f(other):\n    return other._echod_only\n", []),
    ],
)
def test_the_insides_check_tells_a_touch_from_echods_own(tmp_path, text, found):
    assert snippet(tmp_path, text) == found
