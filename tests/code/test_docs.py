"""The docs cannot drift from the code.

* The docs build (mkdocs, `make docs`) reports every kind of broken reference, so `--strict` fails on it.
  The build runs on a copy of the site's sources with faults planted; the real build of the repository's
  docs is `make docs` (a prerequisite of `make test`). These tests need the `docs` extra.
* Without mkdocs (fast): every repository path, `reclora.x.y` name, `reclora` command and option, and call
  in a Python example that README.md, the pages under docs/, infra/README.md and feature_repo/README.md
  write exists in the code as it is, and docs/architecture.md has a row for every module.
"""

import ast
import importlib
import inspect
import re
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

needs_docs_extra = pytest.mark.skipif(
    find_spec("mkdocstrings") is None, reason="the `docs` extra (make install installs it)"
)

REPO = Path(__file__).resolve().parents[2]
MKDOCS = [sys.executable, "-m", "mkdocs", "build"]


def _site_copy(tmp: Path, strict: bool) -> Path:
    """The docs sources as the repository has them, in ``tmp`` (the library and the infra guide linked)."""
    shutil.copytree(REPO / "docs", tmp / "docs")
    shutil.copytree(REPO / "benchmarks", tmp / "benchmarks", ignore=shutil.ignore_patterns("*.json", "*-work"))
    (tmp / "infra").mkdir()
    shutil.copy(REPO / "infra" / "README.md", tmp / "infra" / "README.md")
    shutil.copy(REPO / "README.md", tmp / "README.md")
    (tmp / "src").symlink_to(REPO / "src")
    config = (REPO / "mkdocs.yml").read_text()
    assert "\nstrict: true\n" in config, "the site must build strictly"
    (tmp / "mkdocs.yml").write_text(config.replace("\nstrict: true\n", f"\nstrict: {str(strict).lower()}\n"))
    return tmp


def _build(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(MKDOCS, cwd=root, capture_output=True, text=True, timeout=300)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text + "\n")


@needs_docs_extra
@pytest.mark.slow  # mkdocs end to end, two builds of about 10 s
def test_every_broken_reference_is_a_warning_and_fails_the_strict_build(tmp_path):
    root = _site_copy(tmp_path / "lenient", strict=False)
    _append(root / "docs" / "index.md", "[a page](no-such-page.md) [an anchor](data.md#no-such-anchor)")
    _append(root / "docs" / "index.md", "[here](#no-such-heading) [an object][reclora.data.no_such_function]")
    _append(root / "README.md", "[gone](docs/no-such-page.md)")
    commands = root / "docs" / "commands.md"
    commands.write_text(commands.read_text().replace("(#reclora-data-version)", "", 1))
    done = _build(root)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    for expected in (
        "'no-such-page.md', but the target is not found",
        "does not contain an anchor '#no-such-anchor'",
        "'#no-such-heading', but there is no such anchor",
        "Could not find cross-reference target 'reclora.data.no_such_function'",
        "README.md links docs/no-such-page.md",
        "does not link `reclora data version`",
    ):
        assert any(expected in w for w in warnings), (expected, warnings)
    assert len(warnings) == 6, warnings  # the sources as they are add none

    strict = _site_copy(tmp_path / "strict", strict=True)
    _append(strict / "docs" / "index.md", "[a page](no-such-page.md)")
    done = _build(strict)
    assert done.returncode != 0 and "Aborted with 1 warnings in strict mode" in done.stdout + done.stderr, done.stderr


@needs_docs_extra
@pytest.mark.slow  # mkdocs end to end
def test_an_api_page_naming_a_missing_object_fails_the_build(tmp_path):
    root = _site_copy(tmp_path, strict=True)
    _append(root / "docs" / "api" / "data.md", "::: reclora.data.no_such_function")
    done = _build(root)
    assert done.returncode != 0 and "Could not collect 'reclora.data.no_such_function'" in done.stderr, done.stderr


@needs_docs_extra
def test_the_command_reference_is_generated_from_the_cli(tmp_path):
    sys.path.insert(0, str(REPO / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(REPO / "docs"))
    entries = dict(hooks.cli_commands())
    assert "reclora data prepare" in entries and "reclora registry promote" in entries
    prepare = entries["reclora data prepare"]
    assert "reclora data prepare [OPTIONS]" in prepare  # the usage line
    assert "| `--dataset <str>` |" in prepare and "[required]" in prepare  # an option row with its help
    assert "--help" not in prepare
    # a pipe in a help text is escaped outside code spans only (a table cell; in code it would show)
    assert hooks.cell("a | b `x|y`\n  c") == r"a \| b `x|y` c"


@needs_docs_extra
def test_docstrings_read_as_markdown_the_way_they_are_meant():
    import griffe

    sys.path.insert(0, str(REPO / "docs"))
    try:
        from griffe_house import HouseDocstrings
    finally:
        sys.path.remove(str(REPO / "docs"))
    doc = "h [n, H] or [h, z] [n, H + 1]; see :func:`reclora.data.prepare` and [the CRM][reclora.crm]."
    fn = griffe.Function("f", docstring=griffe.Docstring(doc))
    HouseDocstrings().on_instance(node=None, obj=fn, agent=None)
    # a shape after a bracketed group is not a reference link; a role is code; a real cross-reference stays
    assert fn.docstring.value == (
        r"h [n, H] or [h, z] \[n, H + 1]; see `reclora.data.prepare` and [the CRM][reclora.crm]."
    )


# ---------------------------------------------------------------------------------------------------------
# The docs name only what exists: every repository path, every `reclora.x.y` name, every `reclora` command
# and option, and every call in a Python example resolves against the code as it is. Fast (no mkdocs).

DOCS = ("README.md", "docs/*.md", "infra/README.md", "feature_repo/README.md")
# A repository path: one of these top-level folders, then a path (placeholders like <name> or * end it).
PATH = re.compile(
    r"(?<![\w./-])((?:src|components|pipelines|tests|infra|feature_repo|benchmarks|scripts|docs)/[\w./-]*)"
)
# A dotted name of the library, not part of a host name (`reclora.reclora.<domain>`) or a label
# (`reclora.ai/accelerator`).
NAME = re.compile(r"(?<![\w./-])reclora(?:\.[A-Za-z_]\w*)+(?![\w./<-])")
SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def doc_files(root: Path = REPO) -> list[Path]:
    """The Markdown files the checks read: the README, every page of docs/, and the two guides it includes."""
    return sorted({f for pattern in DOCS for f in root.glob(pattern)})


def _fenced(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def _prose(text: str) -> str:
    return FENCE.sub("", text)


def missing_paths(text: str, root: Path = REPO) -> list[str]:
    """Repository paths written in ``text`` (anywhere: prose, spans, code blocks) that do not exist."""
    out = []
    for found in PATH.findall(text):
        path = found.rstrip(".,:;")
        if not (root / path).exists():
            out.append(path)
    return out


def resolve(dotted: str) -> object:
    """The module or attribute ``dotted`` names (the longest importable module prefix, then attributes).

    Raises LookupError naming what is missing; an error raised while importing a module that exists
    is not caught (a broken module is a fault too, not a missing name)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
                continue  # this prefix is not a module: try a shorter one, the rest are attributes
            raise
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                raise LookupError(f"{dotted}: {'.'.join(parts[:i])} has no {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise LookupError(f"{dotted}: no such module")


def unresolved_names(text: str) -> list[str]:
    """`reclora.x.y` names written in inline code spans of ``text`` that do not resolve, with why."""
    out = []
    for span in SPAN.findall(_prose(text)):
        for dotted in NAME.findall(span):
            try:
                resolve(dotted)
            except LookupError as e:
                out.append(str(e))
    return out


def _python_calls(code: str) -> list[str]:
    """Problems of one Python example: imports of ours that do not resolve, calls of our functions whose
    arguments do not bind to the function's signature (a renamed or removed parameter, a missing one)."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return [f"not Python: {e}"]
    names: dict[str, object] = {}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "reclora":
            for alias in node.names:
                try:
                    names[alias.asname or alias.name] = resolve(f"{node.module}.{alias.name}")
                except LookupError as e:
                    problems.append(str(e))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "reclora":
                    try:
                        resolve(alias.name)
                    except LookupError as e:
                        problems.append(str(e))
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names):
            continue
        fn = names[node.func.id]
        if not callable(fn) or any(isinstance(a, ast.Starred) for a in node.args):
            continue
        if any(k.arg is None for k in node.keywords):
            continue  # **kwargs: cannot tell
        try:
            inspect.signature(fn).bind(*node.args, **{k.arg: None for k in node.keywords})
        except TypeError as e:
            problems.append(f"{node.func.id}(...) line {node.lineno}: {e}")
    return problems


def bad_python_examples(text: str) -> list[str]:
    """Problems of every ```python block of ``text`` (see :func:`_python_calls`)."""
    return [p for lang, code in _fenced(text) if lang == "python" for p in _python_calls(code)]


def _cli_root():
    import typer

    from reclora.cli import app

    return typer.main.get_command(app)


def _leaves(command) -> list:
    subs = getattr(command, "commands", None)
    return [command] if subs is None else [leaf for sub in subs.values() for leaf in _leaves(sub)]


def _options(command) -> set[str]:
    """The options a leaf command shows in its help (``--help`` included, hidden ones not)."""
    shown = [p for p in command.params if not getattr(p, "hidden", False)]
    return {"--help"} | {opt for p in shown for opt in p.opts + p.secondary_opts}


def bad_commands(text: str, root=None) -> list[str]:
    """`reclora ...` command lines in ``text`` (inline spans, and lines of ```bash blocks) that name a command
    that does not exist or an option the command does not have (hidden, deprecated options included)."""
    root = root if root is not None else _cli_root()
    lines = [s for s in SPAN.findall(_prose(text))]
    lines += [ln for lang, code in _fenced(text) if lang in ("bash", "sh", "console", "") for ln in code.splitlines()]
    out = []
    for line in lines:
        m = re.match(r"\s*(?:\$ )?(?:[\w./]*/)?reclora(\s.*|$)", line)
        if not m:
            continue
        words = m.group(1).split("#", 1)[0].split()
        commands, i = [root], 0
        while i < len(words) and all(getattr(c, "commands", None) is not None for c in commands):
            word = words[i]
            if word.startswith("-"):
                break
            group = commands[0] if len(commands) == 1 else None
            names = word.split("|")
            if group is not None and all(n in group.commands for n in names):
                commands = [group.commands[n] for n in names]
            elif group is not None and (word.isupper() or word in ("...", "<area>", "<command>")):
                commands = _leaves(group)  # a placeholder: any command under this group
            else:
                out.append(f"`{line.strip()}`: no command {word!r}")
                commands = []
                break
            i += 1
        if not commands:
            continue
        allowed = set().union(*(_options(leaf) for c in commands for leaf in _leaves(c)))
        for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(words[i:])):
            if opt not in allowed:
                out.append(f"`{line.strip()}`: no option {opt}")
    return out


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_name_command_and_call_the_docs_write_exists(doc):
    text = doc.read_text()
    problems = [f"no such path: {p}" for p in missing_paths(text)]
    problems += [f"no such name: {p}" for p in unresolved_names(text)]
    problems += bad_commands(text) + [f"python example: {p}" for p in bad_python_examples(text)]
    assert not problems, f"{doc.relative_to(REPO)} has drifted from the code:\n" + "\n".join(problems)


def test_the_docs_checks_find_what_has_drifted(tmp_path):
    (tmp_path / "src" / "reclora").mkdir(parents=True)
    text = "\n".join(
        [
            "See `src/reclora/stages.py` (gone) and src/reclora/, `components/train_llm/component.py` and",
            "`reclora.stages.llm_stage`, `reclora.stages.no_such_stage`, `reclora.stagez`, host `reclora.reclora.<d>`.",
            "Run `reclora train crm --data D --features F` or `reclora train crum --data D`, then",
            "`reclora registry list|show REF [--uri URI]` and `reclora serve --model R --feature-store S`.",
            "```python",
            "from reclora.stages import crm_stage, gone_stage",
            "crm_stage('data', 'ret', 'out', {}, progress=False)",
            "crm_stage('data', 'ret', 'out', params={}, feature_dir='f')",
            "crm_stage('data', out_dir='out', params={})",
            "```",
            "```bash",
            ".venv/bin/reclora data prepare --dataset ml-100k --path P --out O   # ok --not-an-option",
            "reclora data prepare --dataset ml-100k --bogus",
            "```",
        ]
    )
    assert missing_paths(text, tmp_path) == ["src/reclora/stages.py", "components/train_llm/component.py"]
    assert unresolved_names(text) == [
        "reclora.stages.no_such_stage: reclora.stages has no 'no_such_stage'",
        "reclora.stagez: reclora has no 'stagez'",
    ]
    assert bad_commands(text) == [
        "`reclora train crm --data D --features F`: no option --features",  # hidden: the old name
        "`reclora train crum --data D`: no command 'crum'",
        "`reclora data prepare --dataset ml-100k --bogus`: no option --bogus",
    ]
    problems = bad_python_examples(text)
    assert problems[0] == "reclora.stages.gone_stage: reclora.stages has no 'gone_stage'"
    assert [p.split(":")[0] for p in problems[1:]] == ["crm_stage(...) line 3", "crm_stage(...) line 4"]
    assert "feature_dir" in problems[1] and "retrieved_dir" in problems[2]


def library_modules(root: Path = REPO) -> list[str]:
    """Every module of the library (``reclora.x.y``, packages' ``__init__`` and ``__main__`` left out) and every
    module of ``pipelines/`` (as its path); ``components/`` is named by folder in the table."""
    src = root / "src"
    out = [
        ".".join(f.relative_to(src).with_suffix("").parts)
        for f in sorted((src / "reclora").rglob("*.py"))
        if f.name not in ("__init__.py", "__main__.py")
    ]
    return out + [f"pipelines/{f.name}" for f in sorted((root / "pipelines").glob("*.py")) if f.name != "__init__.py"]


def test_the_architecture_page_lists_every_module():
    page = (REPO / "docs" / "architecture.md").read_text()
    packages = page[page.index("## Packages") :]
    named = set(SPAN.findall(packages))
    missing = [m for m in library_modules() if m not in named]
    assert not missing, "modules without a row in docs/architecture.md's package tables: " + ", ".join(missing)
    components = sorted(d.name for d in (REPO / "components").iterdir() if (d / "component.py").is_file())
    assert components and all(f"`{c}`" in packages for c in components), components
