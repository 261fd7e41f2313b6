"""The run's params are loaded once, at the edges, and passed down: no library function reads params.yaml itself.

Every module under src/reclora is parsed with ``ast`` (nothing is imported). A call of a loader of
:mod:`reclora.config` (``load_params``, ``load_params_with``, ``section``: by the name it was imported under, or
as an attribute of the imported ``reclora.config`` module) is allowed only in the edges: the configuration
package itself, the command line (``reclora.cli``), the torchrun entry point (``reclora.launch``'s
``_load_params``), the Spark drivers' ``main`` (``*/spark_job.py``). The check is shown to find each way of
calling them on planted source.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
LOADERS = {"load_params", "load_params_with", "section"}
CONFIG_MODULES = {"reclora.config", "reclora.config.loader"}
EDGE_PACKAGES = ("reclora.config", "reclora.cli")
EDGE_FUNCTIONS = {
    "reclora.launch": {"_load_params"},
    "reclora.data.spark_job": {"main"},
    "reclora.features.spark_job": {"main"},
}


def loader_calls(source: str) -> list[tuple[int, str, str | None]]:
    """(line, the loader called, the name of the function around the call or None) of every call of a
    reclora.config loader in ``source``."""
    tree = ast.parse(source)
    names: dict[str, str] = {}  # local name -> loader
    modules: set[str] = set()  # local names of the reclora.config module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in CONFIG_MODULES:
            names |= {a.asname or a.name: a.name for a in node.names if a.name in LOADERS}
        elif isinstance(node, ast.ImportFrom) and node.module == "reclora":
            modules |= {a.asname or a.name for a in node.names if a.name == "config"}
        elif isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names if a.name in CONFIG_MODULES and a.asname}
    found: list[tuple[int, str, str | None]] = []

    def visit(node: ast.AST, where: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            if isinstance(child, ast.Call):
                f = child.func
                if isinstance(f, ast.Name) and f.id in names:
                    found.append((child.lineno, names[f.id], where))
                elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules:
                    if f.attr in LOADERS:
                        found.append((child.lineno, f.attr, where))
            visit(child, inner)

    visit(tree, None)
    return found


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_check_finds_every_way_of_calling_a_loader():
    source = """
from reclora import config
from reclora.config import load_params as lp, section
import reclora.config as cfg

X = section("model")                      # at import time

def stage(params=None):
    params = params or lp()
    return config.section("validation"), cfg.load_params_with(None, "small")

def fine(params):
    return params["model"], section_of(params)   # another function of that name is not a loader
"""
    want = [
        (6, "section", None),
        (9, "load_params", "stage"),
        (10, "section", "stage"),
        (10, "load_params_with", "stage"),
    ]
    assert loader_calls(source) == want


def test_no_library_function_loads_params_itself():
    offenders = []
    for path in sorted((SRC / "reclora").rglob("*.py")):
        module = _module(path)
        if module.startswith(EDGE_PACKAGES):
            continue
        for line, loader, where in loader_calls(path.read_text()):
            if where not in EDGE_FUNCTIONS.get(module, set()):
                offenders.append(f"{path.relative_to(SRC)}:{line} calls {loader}() in {where or 'the module'}")
    assert not offenders, "params are loaded at the edges and passed down:\n" + "\n".join(offenders)
