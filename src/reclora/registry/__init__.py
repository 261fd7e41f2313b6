"""The adapter registry: immutable numbered versions, champion/challenger promotion, rollback, model cards.

    register(uri, crm_dir=, adapter_dir=, retrieval_dir=, items_path=, params=, metrics=, lineage=, base_model=)
                          -> manifest of the new version vNNNN (never overwrites one)
    register_and_gate(uri, rules=PromotionRules(...), **register_kwargs)
                          -> {"version", "promoted", "reason", "path", "decision", ...}
    decide(evidence, rules) -> {"promote", "reason", "checks", ...}   (reclora.registry.gate: same-sample
                          figures of the challenger, the same-run baseline and the re-scored champion)
    promote(uri, version[, allow_other_data]) / rollback(uri) / champion(uri) / history(uri)
    list_versions(uri) / show(uri, ref) / resolve(uri, ref="champion"|"latest"|"vNNNN") / verify(uri, ref)
    cleanup(uri)          remove what killed writers left behind

``uri`` is a local directory or any fsspec URI (s3://, gs://, memory://); every function takes
``name=`` (default "reclora"). See :mod:`reclora.registry.store` for the layout and the atomicity rules;
the modules: ``errors``, ``backend`` (the Store over local paths and fsspec URIs), ``manifest`` (hashes,
lineage, verification), ``store`` (register, list, show, resolve), ``promotion``, ``gate``, ``card``,
``metrics``, ``deploy`` (KServe), ``kubeflow`` (the optional Kubeflow Model Registry).
"""

from reclora.registry.backend import DEFAULT_NAME, cleanup
from reclora.registry.card import render_model_card
from reclora.registry.errors import NoChampion, NoPreviousChampion, RegistryError, VersionNotFound
from reclora.registry.gate import PromotionRules, decide
from reclora.registry.metrics import headline, summarize_metrics
from reclora.registry.promotion import OtherData, champion, history, promote, register_and_gate, rollback
from reclora.registry.store import list_versions, register, resolve, show, verify

__all__ = [
    "DEFAULT_NAME",
    "NoChampion",
    "NoPreviousChampion",
    "OtherData",
    "PromotionRules",
    "RegistryError",
    "VersionNotFound",
    "champion",
    "cleanup",
    "decide",
    "headline",
    "history",
    "list_versions",
    "promote",
    "register",
    "register_and_gate",
    "render_model_card",
    "resolve",
    "show",
    "summarize_metrics",
    "rollback",
    "verify",
]
