"""MkDocs hooks of the docs site (mkdocs.yml ``hooks:``): pages and files that come from the repository.

- ``infra.md`` is ``infra/README.md`` (the manifests' guide stays beside the manifests);
- ``figures/*.png`` are the benchmark plots in ``benchmarks/``;
- ``README.md``'s relative links must name files that exist (the README is not a page of the site, but
  it links into it);
- ``commands.md``'s ``<!-- cli-reference -->`` marker becomes the reference of every ``reclora`` command,
  generated from the typer app itself (usage, help, every option with its help and default), and the
  page's overview table must link every command's reference entry (a missing one is a warning, so
  ``mkdocs build --strict`` fails on it).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import get_plugin_logger
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- cli-reference -->"
log = get_plugin_logger("reclora-docs")


def on_pre_build(config) -> None:
    """Check that every relative link of README.md leads to a file of the repository."""
    readme = ROOT / "README.md"
    for target in re.findall(r"\]\(([^)\s]+)\)", readme.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor of the README itself
        if not (ROOT / target.split("#", 1)[0]).exists():
            log.warning(f"README.md links {target}, which does not exist")


def on_files(files: Files, config) -> Files:
    """Add the files the pages use from outside ``docs/``: the infra guide and the benchmark plots."""
    files.append(File.generated(config, "infra.md", abs_src_path=str(ROOT / "infra" / "README.md")))
    for png in sorted((ROOT / "benchmarks").glob("*.png")):
        files.append(File.generated(config, f"figures/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Put the generated command reference in place of the marker and check the overview links to it."""
    if MARKER not in markdown:
        return markdown
    commands = cli_commands()
    overview = markdown.split(MARKER, 1)[0]
    for path, _ in commands:
        if f"(#{anchor(path)})" not in overview:
            log.warning(f"{page.file.src_uri}: the command overview does not link `{path}` (#{anchor(path)})")
    return markdown.replace(MARKER, "\n\n".join(text for _, text in commands))


def anchor(path: str) -> str:
    """The heading anchor of a command's reference entry: ``reclora data prepare`` -> ``reclora-data-prepare``."""
    return path.replace(" ", "-")


def cli_commands() -> list[tuple[str, str]]:
    """(command path, its reference entry in Markdown) for every leaf command of ``reclora``, in help order."""
    import typer
    from typer import _click as click

    from reclora.cli import app

    out: list[tuple[str, str]] = []

    def walk(command, ctx) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands is not None:
            for name in command.list_commands(ctx):
                sub = subcommands[name]
                walk(sub, click.Context(sub, info_name=name, parent=ctx))
            return
        path = ctx.command_path
        usage = " ".join([path, *command.collect_usage_pieces(ctx)])
        rows = []
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or param.name == "help":
                continue
            opts, help_text = record
            rows.append(f"| `{cell(opts)}` | {cell(help_text)} |")
        group = ctx.parent.command.help if ctx.parent and ctx.parent.parent else None
        text = [f"### {path}", "", cell(command.help or ""), "", "```text", usage, "```"]
        if group:
            text[2:2] = [f"*{path.rsplit(' ', 1)[0]}*: {cell(group)}", ""]
        if rows:
            text += ["", "| option | what it does |", "|---|---|", *rows]
        out.append((path, "\n".join(text)))

    root = typer.main.get_command(app)
    walk(root, click.Context(root, info_name="reclora"))
    return out


def cell(text: str) -> str:
    """One table cell (or paragraph) of help text: a single line, ``|`` escaped outside code spans (inside
    one Python-Markdown's tables keep it, and an escape would show)."""
    parts = re.split(r"(`[^`]*`)", re.sub(r"\s+", " ", text).strip())
    return "".join(p if p.startswith("`") else p.replace("|", r"\|") for p in parts)
