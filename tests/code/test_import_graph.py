"""No import circles among our modules (src/reclora, pipelines, components).

Every module is parsed with ``ast`` (nothing is imported) and every ``import``/``from ... import``
in it is an edge, at module level and inside functions and methods alike: a lazy import inside a
function still makes the two modules depend on each other. Relative imports are resolved against the
importing module's package. Imports under ``if TYPE_CHECKING:`` are left out (they never run).
Only our own modules are nodes; third-party imports are ignored.

Where an import points:

* ``import a.b.c`` -> the module ``a.b.c`` (the longest prefix of it that is one of our modules);
* ``from a.b import c`` -> the submodule ``a.b.c`` when there is one (importing a submodule by name
  imports that submodule);
* ``from a.b import name`` where ``a.b`` is a package whose ``__init__`` re-exports ``name`` from a
  submodule (``from a.b.d import name``) -> that submodule ``a.b.d``, followed through further
  re-exports; a name the ``__init__`` defines itself -> the package ``a.b``;
* ``from a.b import *`` and ``import a.b`` of a package -> the package ``a.b`` (its ``__init__``);
* a package's ``__init__`` has an edge to every module it imports, so a module that imports the
  package (not a name through it) depends on everything the ``__init__`` re-exports.

Package ``__init__`` files: Python runs a package's ``__init__`` before any of its submodules, so
taken literally every submodule would "import" its own package and, through the re-exports, its
siblings: ``reclora.features.read`` imports ``reclora.features.definitions``, which runs
``reclora/features/__init__.py``, which re-exports ``read``. That is the classic false circle (the
package is already being initialised, nothing runs twice, no name is missing), so the implicit edge
from a submodule to its parent package is not counted, and an import of a name through a package
counts as an import of the submodule that defines the name (above). A module that needs a name the
``__init__`` defines itself, or the whole package, still gets its edge to the package: such a circle
is real and is reported.

A circle is a strongly connected component of two or more modules (or a module importing itself);
each one found is named with one concrete cycle through it (``a -> b -> a``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[2]
# (directory that holds top-level packages, the packages in it to scan)
ROOTS = ((REPO / "src", ("reclora",)), (REPO, ("pipelines", "components")))

# Circles owned by other engineers of issue 26, being broken on their branches at the same time;
# each entry is the set of modules of one circle and who owns it. The lead removes an entry on merging.
KNOWN_CIRCLES_OWNED_ELSEWHERE: dict[frozenset[str], str] = {}


def discover(roots) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package ``__init__``) for every .py file under the given packages."""
    out: dict[str, tuple[Path, bool]] = {}
    for base, packages in roots:
        for pkg in packages:
            for f in sorted((Path(base) / pkg).rglob("*.py")):
                parts = list(f.relative_to(base).with_suffix("").parts)
                is_pkg = parts[-1] == "__init__"
                if is_pkg:
                    parts = parts[:-1]
                out[".".join(parts)] = (f, is_pkg)
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = getattr(child, "test", None) if isinstance(child, ast.If) else None
            if test is not None and ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _absolute(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute module name ``from <node.module> import ...`` refers to in ``module``."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_pkg else module.split(".")[:-1]
    if node.level - 1 >= len(package):
        raise ValueError(f"{module}: relative import beyond the top-level package")
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _longest_known(name: str, modules) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules:
            return ".".join(parts[:i])
    return None


def import_graph(modules: dict[str, tuple[Path, bool]]) -> nx.DiGraph:
    """The graph of our modules, an edge for every import as the module docstring describes."""
    trees = {m: ast.parse(f.read_text(), str(f)) for m, (f, _) in modules.items()}
    # what each package __init__ re-exports: name -> the module it imports the name from
    reexports: dict[str, dict[str, str]] = {}
    for m, (_, is_pkg) in modules.items():
        if is_pkg:
            table = reexports.setdefault(m, {})
            for node in trees[m].body:
                if isinstance(node, ast.ImportFrom):
                    src = _absolute(m, True, node)
                    for a in node.names:
                        if a.name != "*":
                            table[a.asname or a.name] = f"{src}.{a.name}" if f"{src}.{a.name}" in modules else src

    def through_package(pkg: str, name: str, seen: frozenset[str] = frozenset()) -> str:
        """The module that defines ``name`` as package ``pkg`` exports it."""
        src = reexports.get(pkg, {}).get(name)
        if src is None or src not in modules or src in seen:
            return pkg
        if modules[src][1] and src != f"{pkg}.{name}":  # re-exported from a subpackage's __init__
            return through_package(src, name, seen | {pkg})
        return src

    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for m, (_, is_pkg) in modules.items():
        for node in _runtime_nodes(trees[m]):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_longest_known(a.name, modules) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                src = _absolute(m, is_pkg, node)
                for a in node.names:
                    if f"{src}.{a.name}" in modules:
                        targets.append(f"{src}.{a.name}")
                    elif src in modules and modules[src][1] and a.name != "*":
                        targets.append(through_package(src, a.name))
                    else:
                        targets.append(_longest_known(src, modules))
            g.add_edges_from((m, t) for t in targets if t is not None)
    return g


def circles(g: nx.DiGraph) -> list[tuple[frozenset[str], list[str]]]:
    """(the modules of each circle, one cycle through them as a path that ends where it starts)."""
    out = []
    for scc in nx.strongly_connected_components(g):
        if len(scc) > 1 or any(g.has_edge(n, n) for n in scc):
            cycle = nx.find_cycle(g.subgraph(scc))
            out.append((frozenset(scc), [a for a, _ in cycle] + [cycle[0][0]]))
    return sorted(out, key=lambda c: sorted(c[0]))


def assert_no_circles(modules: dict[str, tuple[Path, bool]], known=()) -> None:
    """AssertionError naming every circle among ``modules`` that is not in ``known``, one cycle per line."""
    found = [(scc, path) for scc, path in circles(import_graph(modules)) if scc not in known]
    lines = [" -> ".join(path) + (f"  (a circle of {len(scc)} modules)" if len(scc) > 2 else "") for scc, path in found]
    if found:
        head = "import circles (A -> B: A imports B, at module level or in a function):"
        raise AssertionError("\n  ".join([head, *lines]))


def test_no_import_circles():
    modules = discover(ROOTS)
    assert len(modules) > 100 and "reclora.features.stage" in modules and "pipelines.pipeline" in modules
    assert_no_circles(modules, known=KNOWN_CIRCLES_OWNED_ELSEWHERE)


def test_known_circles_owned_elsewhere_are_still_circles():
    """An entry of KNOWN_CIRCLES_OWNED_ELSEWHERE whose circle is gone must be deleted, not kept as cover."""
    found = {scc for scc, _ in circles(import_graph(discover(ROOTS)))}
    gone = [f"{sorted(c)} ({who})" for c, who in KNOWN_CIRCLES_OWNED_ELSEWHERE.items() if c not in found]
    assert not gone, f"no longer circles, remove from KNOWN_CIRCLES_OWNED_ELSEWHERE: {gone}"


# ------------------------------------------------------------------ the checker on a planted package
def _package(root: Path, files: dict[str, str]) -> dict[str, tuple[Path, bool]]:
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return discover(((root, ("pkg",)),))


def _found(root: Path, files: dict[str, str]) -> list[list[str]]:
    return [path for _, path in circles(import_graph(_package(root, files)))]


def test_a_planted_circle_through_a_function_level_import_is_found(tmp_path):
    modules = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import g\n\ndef f():\n    return g()\n",
            "pkg/b.py": "def g():\n    from pkg import a\n    return a\n",
            "pkg/c.py": "import pkg.a\n",
        },
    )
    cycle = r"pkg\.(a -> pkg\.b -> pkg\.a|b -> pkg\.a -> pkg\.b)"
    with pytest.raises(AssertionError, match=rf"^import circles .*:\n  {cycle}$"):
        assert_no_circles(modules)
    assert_no_circles(modules, known={frozenset({"pkg.a", "pkg.b"})})  # a known circle is let through
    (tmp_path / "pkg" / "b.py").write_text("def g():\n    return 1\n")
    assert_no_circles(discover(((tmp_path, ("pkg",)),)))  # and with the import gone, none is left


def test_relative_imports_and_longer_circles_are_resolved(tmp_path):
    got = _found(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/x.py": "from ..y import h\n",
            "pkg/y.py": "from .sub import z\n",
            "pkg/sub/z.py": "from . import x\n",
        },
    )
    assert [set(p) for p in got] == [{"pkg.sub.x", "pkg.y", "pkg.sub.z"}]


def test_a_reexporting_init_is_no_false_circle_but_a_real_one_through_it_is_found(tmp_path):
    files = {
        "pkg/__init__.py": "from pkg.stage import run\nfrom pkg.read import load\n\nVERSION = 1\n",
        "pkg/read.py": "from pkg.defs import KEY\n",
        "pkg/defs.py": "KEY = 'k'\n",
        # imports a name through the package: an edge to pkg.read, not to pkg (whose __init__ imports stage)
        "pkg/stage.py": "from pkg import load\n",
    }
    assert _found(tmp_path / "one", files) == []
    # a name the __init__ defines itself: the edge is to the package, which imports stage: a real circle
    got = _found(tmp_path / "two", files | {"pkg/stage.py": "from pkg import VERSION\n"})
    assert [set(p) for p in got] == [{"pkg", "pkg.stage"}]
    # a re-exported name whose module imports back the module that asks for it: a real circle
    got = _found(tmp_path / "three", files | {"pkg/read.py": "def f():\n    from pkg.stage import run\n"})
    assert [set(p) for p in got] == [{"pkg.read", "pkg.stage"}]


def test_type_checking_imports_and_third_party_imports_are_not_edges(tmp_path):
    g = import_graph(
        _package(
            tmp_path,
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "from typing import TYPE_CHECKING\nimport numpy\nif TYPE_CHECKING:\n    from pkg.b import B\n",
                "pkg/b.py": "import pkg.a\n",
            },
        )
    )
    assert set(g.edges) == {("pkg.b", "pkg.a")}
