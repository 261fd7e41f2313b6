"""`reclora registry ...`: versions, the champion, promotion and rollback."""

from __future__ import annotations

import json

import typer

from reclora.cli.common import SET_OPTION, command_params, run_guarded
from reclora.config import Params, as_params

app = typer.Typer(no_args_is_help=True)


def _uri(uri: str | None, params: Params | None = None) -> str:
    """``--uri``, else params ``pipeline.registry_uri`` (``params``, else the command's, loaded here)."""
    if uri:
        return uri
    return (params if params is not None else as_params(command_params())).pipeline.registry_uri


URI = typer.Option(None, "--uri", help="Registry URI (params pipeline.registry_uri; any fsspec URI).")


def _guarded(fn) -> int:
    """run_guarded, with object-store failures (unreachable endpoint, denied credentials) as one error line."""
    from reclora.errors import RecLoRAError

    def wrapped() -> int:
        try:
            return fn()
        except RecLoRAError:
            raise
        except Exception as e:
            mod = type(e).__module__.split(".")[0]
            if isinstance(e, OSError) or mod in ("botocore", "aiobotocore", "s3fs", "gcsfs", "google", "aiohttp"):
                raise RecLoRAError(
                    f"registry storage failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                ) from e
            raise

    return run_guarded(wrapped)


@app.command("list")
def list_cmd(uri: str | None = URI, set_: list[str] | None = SET_OPTION) -> None:
    """Every version with its status, AUC, LogLoss and creation time (each one verified: a version whose
    manifest or files do not match is listed as unreadable, with the reason)."""
    from reclora.registry import list_versions

    def _run() -> int:
        rows = list_versions(_uri(uri))
        if not rows:
            typer.echo("no versions registered")
        for r in rows:
            if r["status"] == "unreadable":
                was = " (champion.json points at it)" if r.get("champion") else ""
                typer.echo(f"{r['version']}  unreadable{was}  {r.get('error', '')}")
                continue
            auc = f"{r['auc']:.4f}" if r.get("auc") is not None else "-"
            ll = f"{r['logloss']:.4f}" if r.get("logloss") is not None else "-"
            typer.echo(f"{r['version']}  {r['status']:<10}  AUC {auc}  LogLoss {ll}  {r.get('created_at')}")
        return 0

    raise typer.Exit(_guarded(_run))


@app.command("show")
def show_cmd(
    ref: str = typer.Argument("champion", help="champion, latest or vNNNN."),
    uri: str | None = URI,
    set_: list[str] | None = SET_OPTION,
) -> None:
    """One version's manifest (files, metrics, lineage) as JSON."""
    from reclora.registry import show

    raise typer.Exit(_guarded(lambda: typer.echo(json.dumps(show(_uri(uri), ref), indent=2, default=str)) or 0))


DEPLOY = typer.Option(
    False,
    "--deploy",
    help="Also patch the KServe InferenceService's storageUri to the new champion "
    "(params pipeline.serving: service, namespace, storage_root).",
)
DRY_RUN = typer.Option(False, "--dry-run", help="Change nothing: print the champion it would be and the patch.")


def _champion_change(
    action: str, version: str | None, uri: str | None, deploy: bool, dry_run: bool, allow_other_data: bool = False
) -> int:
    from reclora.registry import promote, rollback
    from reclora.registry.backend import open_store
    from reclora.registry.deploy import deploy_version, storage_uri
    from reclora.registry.manifest import verified_ref
    from reclora.registry.promotion import OtherData, other_data, rollback_target

    params = as_params(command_params())
    u = _uri(uri, params)
    serving = params.pipeline.serving
    storage_root = serving.storage_root or None
    api = None
    if deploy or dry_run:
        # what is wrong with the version comes first (missing, does not verify, other data), then the serving
        # settings and the API access, all before the champion changes
        store = open_store(u)
        v = verified_ref(store, version, "promoted") if action == "promote" else rollback_target(u)["version"]
        why = other_data(store, v, store.current_champion()) if action == "promote" else None
        if why and not allow_other_data:
            raise OtherData(
                f"{v} was not trained on the champion's data ({why}); pass --allow-other-data to promote it"
            )
        storage_uri(u, v, storage_root=storage_root)
    if deploy and not dry_run:
        from reclora.kube import custom_objects_api

        api = custom_objects_api()
    if dry_run:
        out = {"version": v, "dry_run": True, "changed": False}
    else:
        out = promote(u, version, allow_other_data=allow_other_data) if action == "promote" else rollback(u)
    if deploy or dry_run:
        out["deploy"] = deploy_version(
            u,
            out["version"],
            service=serving.service,
            namespace=serving.namespace,
            storage_root=storage_root,
            dry_run=dry_run,
            api=api,
        )
    typer.echo(json.dumps(out, default=str))
    return 0


@app.command("promote")
def promote_cmd(
    version: str = typer.Argument(..., help="vNNNN"),
    uri: str | None = URI,
    deploy: bool = DEPLOY,
    dry_run: bool = DRY_RUN,
    set_: list[str] | None = SET_OPTION,
    allow_other_data: bool = typer.Option(
        False,
        "--allow-other-data",
        help="Promote a version trained on another data set or item catalogue than the champion (refused without it).",
    ),
) -> None:
    """Make a version the champion by hand (the previous one is kept for rollback)."""
    raise typer.Exit(_guarded(lambda: _champion_change("promote", version, uri, deploy, dry_run, allow_other_data)))


@app.command("rollback")
def rollback_cmd(
    uri: str | None = URI, deploy: bool = DEPLOY, dry_run: bool = DRY_RUN, set_: list[str] | None = SET_OPTION
) -> None:
    """Restore the previous champion."""
    raise typer.Exit(_guarded(lambda: _champion_change("rollback", None, uri, deploy, dry_run)))
