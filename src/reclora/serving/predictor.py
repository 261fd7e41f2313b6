"""RecLoRA as a KServe model: score a user's candidate items with the personalized LoRA.

Loads one registered version (CRM, adapter, item embeddings, items, params) on top of its
base LLM and answers both KServe protocols.

V1 (``POST /v1/models/NAME:predict``)::

    {"instances": [{"user_id": 1, "candidates": [10, 20, 30],
                    "history": [{"item_id": 5, "rating": 4, "timestamp": 880000000}, ...],   # optional
                    "timestamp": 890000000}]}                                               # optional
    -> {"predictions": [{"user_id": 1, "cold_start": false, "history_source": "request",
                         "scores": [{"item_id": 20, "p_click": 0.61}, ...]}]}    # ranked, p desc

The history is the instance's inline list when given (new users), else the user's latest
history from the Feast online store (when the predictor has one), else empty: a cold start
(``"cold_start": true``, the prompt says the user has rated nothing yet). History entries need
``item_id`` and ``rating``; ``timestamp`` defaults to the entry's position. With a request
``timestamp`` only strictly earlier history is used.

V2 / Open Inference Protocol (``POST /v2/models/NAME/infer``), inputs:

    user_id     INT64 [n]
    candidates  INT64 [n, k]             (the same k for every user), or
                BYTES [n]                one JSON list of item ids per user (k may differ)
    history     BYTES [n]   (optional)   one JSON list of history entries per user ("[]" or "null" = none)

outputs:

    p_click     FP32 [n, k]   click probability per candidate, in the request's candidate order
                              (ragged BYTES candidates: padded with -1 up to the longest list)
    cold_start  BOOL [n]

A request's ``outputs`` ([{"name": "cold_start"}]) picks which of them come back, in its order (none: both);
an output name the model lacks is a 400 listing the outputs. The body holds only the protocol's keys
(``id``, ``parameters``, ``inputs``, ``outputs``; an input's ``name``, ``shape``, ``datatype``,
``parameters``, ``data``; an output's ``name``, ``parameters``): ``"Inputs"`` or ``"Data"`` is a 400, never
ignored (checked by the server on the raw JSON, :func:`reclora.serving.requests.check_v2_fields`).

Bad input raises kserve's InvalidInput, which the server turns into HTTP 400 naming the field
(:mod:`reclora.serving.requests` lists the checks; history ratings are checked against
validation.rating_range of the version's params, else of the serving machine's params.yaml). A 500 is
only a fault of the server.

All rows of all instances of a request are scored in one batched forward; forwards are
serialized with a lock because the personalized LoRA layers keep per-forward state.

Long because: one job, the KServe model (:class:`RecLoRAPredictor`: load a version, parse both
protocols' requests, build the samples, score); the scoring itself is :mod:`reclora.scoring`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from reclora.errors import DataError, RecLoRAError
from reclora.serving.requests import MAX_TIMESTAMP, parse_instances, parse_v2, v1_instances, v2_outputs

if TYPE_CHECKING:
    from reclora.config.model_sections import ModelSection
    from reclora.scoring import ScoringInputs, ScoringModel

DEFAULT_NAME = "reclora"
HISTORY_SOURCES = ("request", "feature_store", "none")
__all__ = ["DEFAULT_NAME", "HISTORY_SOURCES", "MAX_TIMESTAMP", "RecLoRAPredictor", "resolve_version_dir"]


def resolve_version_dir(model: str | Path, ref: str = "champion") -> Path:
    """A version directory (has manifest.json) as is; otherwise a local registry URI resolved at ``ref``.

    Raises DataError for a version that does not verify against its manifest (a manifest cut short, a
    file missing, changed or not listed: :func:`reclora.registry.manifest.verify_dir`): it is never served."""
    from reclora.registry.manifest import verify_dir

    p, version = Path(str(model)), None
    if not (p / "manifest.json").is_file():
        from reclora.registry import resolve

        vdir = resolve(str(model), ref)
        p, version = Path(vdir), Path(vdir).name
        if not (p / "manifest.json").is_file():
            raise DataError(
                f"{vdir}: not a local registry version (no manifest.json); only local registries are served"
            )
    problems = verify_dir(p, version)
    if problems:
        raise DataError(f"{p} cannot be served: it does not verify against its manifest ({'; '.join(problems[:5])})")
    return p


class RecLoRAPredictor(Model):
    """A kserve Model serving one registered RecLoRA version: :meth:`load` loads it, :meth:`predict` answers
    V1 and V2 requests (see the module docstring); the arguments are described on ``__init__``."""

    def __init__(
        self,
        model_uri: str | Path,
        ref: str = "champion",
        name: str = DEFAULT_NAME,
        base_model: str | Path | None = None,
        feature_store: str | Path | None = None,
        max_candidates: int = 100,
        max_instances: int = 64,
        max_batch: int = 512,
        precision: str | None = None,
        num_threads: int | None = None,
        rating_ranges: Mapping[str, Sequence[float]] | None = None,
        model: ModelSection | Mapping[str, Any] | None = None,
    ) -> None:
        """``precision``: auto | fp32 | bf16 | fp16 (None = auto), decided by this server's own hardware
        when loading (:func:`reclora.precision.choose`), never the precision recorded at training.
        ``num_threads``: torch's CPU threads (None: as the process set them, from its CPU quota).
        ``rating_ranges``: validation.rating_range of the serving machine's params ({data set: [lo, hi]}),
        for a version whose own params lack it; None: inline history ratings need only be finite.
        ``model``: the serving machine's params ``model`` section (loaded at the edge: the serve command, the
        evaluate stage), which finds the base LLM on this machine: a version registered elsewhere names the
        embedded default in that machine's cache (:func:`reclora.llm.location.local_model_path`), and
        ``model.path`` stands in for a version that records none; None: the base LLM is ``base_model``, else
        the path the version records, as it is."""
        super().__init__(name)
        self.model_uri, self.ref = str(model_uri), ref
        self.base_model_override = str(base_model) if base_model else None
        self.model_section = model
        self.feature_store = str(feature_store) if feature_store else None
        self.max_candidates, self.max_instances, self.max_batch = (
            int(max_candidates),
            int(max_instances),
            int(max_batch),
        )
        from reclora.precision import PRECISIONS

        if precision is not None and precision not in PRECISIONS:
            raise DataError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision_request = precision or "auto"
        self.num_threads = num_threads
        self.rating_ranges = dict(rating_ranges) if rating_ranges is not None else None
        self._lock = threading.Lock()
        self._store_lock = threading.Lock()
        self.item_set: set[int] = set()  # filled by load(); the request parser needs only these two
        self.rating_range: tuple[float, float] | None = None
        self.stats = {"requests": 0, "rows": 0, "tokens": 0, "tokens_squared": 0}  # scored since load (bench serve)
        self._stats_lock = threading.Lock()
        self.ready = False

    # ------------------------------------------------------------------ load
    def load(self) -> bool:
        """Load the version (verified against its manifest): CRM, item embeddings, catalogue, base LLM and
        adapter, and open the feature store when given; returns ``ready`` (True). Raises DataError for a
        version that does not verify, RecLoRAError when no base model is known."""
        import torch
        from safetensors.numpy import load_file

        from reclora.crm import load_crm
        from reclora.few2many import load_adapter
        from reclora.io import read_json
        from reclora.llm import load_causal_lm, resolve_model_path
        from reclora.llm.location import local_model_path

        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        vdir = resolve_version_dir(self.model_uri, self.ref)
        self.version_dir = vdir
        self.manifest = read_json(vdir / "manifest.json")
        self.version = self.manifest.get("version", vdir.name)
        # the sections the version was trained with, as recorded (an older version's may lack newer keys)
        self.params = read_json(vdir / "params.json") if (vdir / "params.json").is_file() else {}
        retrieval = self.params.get("retrieval", {})
        self.k_long, self.k_short = int(retrieval.get("k_long", 60)), int(retrieval.get("k_short", 10))
        self.max_length = int(self.params.get("train", {}).get("max_length", 384))
        # the retrieval pool of a training sample: its user's max_history most recent earlier events
        self.max_history = int((self.params.get("data") or {}).get("max_history", 0)) or None
        data = self.manifest.get("data") or {}
        from reclora.prompts import NOUNS

        self.noun = NOUNS.get(str(data.get("dataset")), "movie") if data.get("dataset") else "movie"
        self.threshold = float(data.get("label_threshold") or 4.0)
        self.rating_range = self._rating_range(str(data.get("dataset")))

        crm_dir = vdir / "crm"
        if (crm_dir / "model").is_dir():
            crm_dir = crm_dir / "model"
        self.crm, self.featurizer = load_crm(crm_dir)

        self.items = pd.read_parquet(vdir / "items.parquet")
        self.item_set = set(int(i) for i in self.items["item_id"])
        emb_file = vdir / "retrieval" / "item_embeddings.safetensors"
        self.item_ids: np.ndarray | None = None
        self.embeddings: np.ndarray | None = None
        self.mode = "recent"  # without item embeddings: the K most recent behaviours
        if emb_file.is_file() and retrieval.get("mode", "relevance") == "relevance":
            e = load_file(str(emb_file))
            self.item_ids, self.embeddings, self.mode = e["item_ids"], e["embeddings"], "relevance"

        recorded = self.manifest.get("base_model")  # where training found it; maybe another machine's cache
        if self.model_section is None:
            if not (self.base_model_override or recorded):
                raise RecLoRAError(f"{vdir}: the version records no base model; give base_model (--base-model)")
            self.base_model_path = str(self.base_model_override or recorded)
        else:  # this server's params: its model cache and explicit model path
            base = self.base_model_override or (recorded and local_model_path(recorded, self.model_section))
            self.base_model_path = resolve_model_path(base or None, self.model_section)
        base, self.tokenizer = load_causal_lm(self.base_model_path)
        self.adapter = load_adapter(base, vdir / "adapter")
        self.adapter.train(False)
        from reclora.precision import choose

        self.precision = choose(self.precision_request, next(self.adapter.module.parameters()).device)

        self.store = None
        if self.feature_store:
            from reclora.features import open_feature_store

            repo = Path(self.feature_store)
            if not (repo / "feature_store.yaml").is_file() and (repo / "repo" / "feature_store.yaml").is_file():
                repo = repo / "repo"  # the features stage's output dir
            self.store = open_feature_store(repo)
        self.ready = True
        return self.ready

    def info(self) -> dict[str, Any]:
        """What this server runs and has done (``GET /reclora/info``): {"name", "version", "precision" (the
        choice and why), "hardware", "base_model" {path, the dimensions a FLOP count needs}, "stats"
        {"requests", "rows", "tokens", "tokens_squared"} scored since it loaded}."""
        from reclora.hardware import hardware_info
        from reclora.llm.layers import unwrap

        cfg = getattr(unwrap(self.adapter.module), "config", None)
        dims = {
            k: getattr(cfg, k, None)
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "intermediate_size",
                "num_attention_heads",
                "num_key_value_heads",
                "vocab_size",
            )
        }
        with self._stats_lock:
            stats = dict(self.stats)
        return {
            "name": self.name,
            "version": self.version,
            "precision": self.precision.as_dict(),
            "hardware": hardware_info(),
            "base_model": {"path": self.base_model_path, **dims},
            "stats": stats,
        }

    # ------------------------------------------------------------------ validation
    def _rating_range(self, dataset: str) -> tuple[float, float] | None:
        """validation.rating_range of the data set: the version's params, else the serving machine's."""
        ranges = (self.params.get("validation") or {}).get("rating_range")
        if not isinstance(ranges, Mapping):
            ranges = self.rating_ranges
        rr = ranges.get(dataset) if isinstance(ranges, Mapping) else None
        return (float(rr[0]), float(rr[1])) if isinstance(rr, (list, tuple)) and len(rr) == 2 else None

    def parse_instances(self, instances: Any) -> list[dict[str, Any]]:
        """Validate V1 instances into [{"user_id", "candidates", "history" (or None), "timestamp"}] against this
        version's catalogue and rating range (:func:`reclora.serving.requests.parse_instances`)."""
        return parse_instances(instances, self.item_set, self.rating_range, self.max_instances, self.max_candidates)

    # ------------------------------------------------------------------ scoring
    def _store_lookup(self, user_ids: Sequence[int]) -> dict[int, list]:
        """Histories of ``user_ids`` from the Feast online store (empty without one)."""
        if self.store is None or not user_ids:
            return {}
        from reclora.features import online_user_features

        with self._store_lock:  # the SQLite online store is not shared across threads safely
            f = online_user_features(self.store, list(user_ids), views=("user_history",))
        hist: dict[int, list] = {}
        for _, row in f.iterrows():
            ids, rats, tss = row.get("hist_item_ids"), row.get("hist_ratings"), row.get("hist_timestamps")
            if ids is None or rats is None or len(ids) == 0:
                continue
            tss = tss if tss is not None and len(tss) == len(ids) else range(len(ids))
            hist[int(row["user_id"])] = [(int(a), float(b), int(c)) for a, b, c in zip(ids, rats, tss)]
        return hist

    def shared_features(self, user_ids: Sequence[int], item_ids: Sequence[int]) -> Any:
        """User profiles and item metadata of these ids from the online store, through the same
        ``model_inputs`` as training (a ``ModelInputs``); None without a feature store."""
        if self.store is None:
            return None
        from reclora.features.inputs import model_inputs, online_feature_frames

        with self._store_lock:
            return model_inputs(*online_feature_frames(self.store, user_ids, item_ids))

    def samples(self, parsed: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[bool], list[str], Any]:
        """One CTR sample row per (instance, candidate), with the user's history; cold-start flags;
        the shared features (``ModelInputs`` from the online store, or None without a store)."""
        # the store's history only for users who do not bring theirs inline
        store_hist = self._store_lookup(sorted({p["user_id"] for p in parsed if p["history"] is None}))
        rows, cold, source = [], [], []
        now = int(time.time())
        for p in parsed:
            if p["history"] is not None:
                h, src = p["history"], "request"
            elif p["user_id"] in store_hist:
                h, src = store_hist[p["user_id"]], "feature_store"
            else:
                h, src = [], "none"
            h = sorted(h, key=lambda e: e[2])  # oldest first (stable)
            ts = p["timestamp"]
            if ts is not None:
                h = [e for e in h if e[2] < ts]
            else:
                ts = max(now, h[-1][2] + 1) if h else now
            if self.max_history:
                h = h[-self.max_history :]
            cold.append(not h)
            source.append(src)
            hi = np.array([e[0] for e in h], np.int64)
            hr = np.array([e[1] for e in h], np.float64)
            ht = np.array([e[2] for e in h], np.int64)
            for c in p["candidates"]:
                rows.append(
                    {
                        "user_id": p["user_id"],
                        "item_id": c,
                        "timestamp": int(ts),
                        "n_history": len(h),
                        "hist_item_ids": hi,
                        "hist_ratings": hr,
                        "hist_timestamps": ht,
                    }
                )
        df = pd.DataFrame(rows)
        # profiles of every user (also those who bring their history inline), titles of every item
        item_ids = set(df["item_id"].tolist()) | {int(i) for h in df["hist_item_ids"] for i in h}
        shared = self.shared_features(sorted({p["user_id"] for p in parsed}), sorted(item_ids))
        return df, cold, source, shared

    @property
    def scoring_model(self) -> ScoringModel:
        """The loaded version as :func:`reclora.scoring.score_samples` reads it."""
        from reclora.scoring import PromptStyle, ScoringModel

        style = PromptStyle(self.noun, self.threshold)
        return ScoringModel(self.adapter, self.tokenizer, self.crm, self.featurizer, style, self.max_length)

    def _count(self, inputs: ScoringInputs) -> None:
        """Add a forward's rows and prompt tokens to ``stats``."""
        from reclora.few2many import tokenize

        lengths = [len(x) for x in tokenize(self.tokenizer, inputs.prompts, self.max_length)]
        with self._stats_lock:
            self.stats["requests"] += 1
            self.stats["rows"] += len(inputs.prompts)
            self.stats["tokens"] += sum(lengths)
            self.stats["tokens_squared"] += sum(n * n for n in lengths)

    def score_samples(
        self, df: pd.DataFrame, users: pd.DataFrame | None = None, items: pd.DataFrame | None = None
    ) -> np.ndarray:
        """p(click) per sample row [n], float64: retrieval (this version's mode and K) -> CRM hidden vectors ->
        prompts -> personalized LoRA (-> the CRM logit as the anchor when the adapter's readout is
        crm_residual), through :func:`reclora.scoring.score_samples`, one forward of every row (batches of at
        most ``max_batch``). ``df``: user_id, item_id, timestamp and the history lists hist_item_ids,
        hist_ratings, hist_timestamps; ``items``: titles (default: the version's catalogue)."""
        from reclora.retrieval import retrieve
        from reclora.scoring import score_samples

        r = retrieve(df, self.k_long, self.k_short, self.mode, self.item_ids, self.embeddings)
        with self._lock:
            return score_samples(
                self.scoring_model,
                r,
                self.items if items is None else items,
                users,
                batch_size=max(1, min(len(r), self.max_batch)),
                precision=self.precision,
                distributed=False,
                on_inputs=self._count,
            )

    def score(self, parsed: list[dict[str, Any]]) -> tuple[list[np.ndarray], list[bool], list[str]]:
        """Per instance: p(click) of its candidates in request order; cold-start flags; history sources."""
        df, cold, source, shared = self.samples(parsed)
        try:
            p = self.score_samples(df, *((shared.users, shared.items) if shared is not None else (None, None)))
        except RecLoRAError as e:
            raise InvalidInput(str(e)) from e
        out, i = [], 0
        for inst in parsed:
            k = len(inst["candidates"])
            out.append(p[i : i + k])
            i += k
        return out, cold, source

    def predict_instances(self, instances: Any) -> dict[str, Any]:
        """The V1 answer for ``instances`` (synchronous; what the async ``predict`` runs in a thread)."""
        parsed = self.parse_instances(instances)
        probs, cold, source = self.score(parsed)
        preds = []
        for inst, p, c, s in zip(parsed, probs, cold, source):
            order = np.argsort(-p, kind="stable")
            scores = [{"item_id": inst["candidates"][j], "p_click": float(p[j])} for j in order]
            preds.append({"user_id": inst["user_id"], "cold_start": bool(c), "history_source": s, "scores": scores})
        return {"predictions": preds, "model_version": self.version}

    # ------------------------------------------------------------------ V2
    def parse_v2(self, req: InferRequest) -> tuple[list[dict[str, Any]], int]:
        """InferRequest -> V1-style instances (validated later) and the output width k
        (:func:`reclora.serving.requests.parse_v2`)."""
        return parse_v2(req)

    def predict_v2(self, req: InferRequest) -> InferResponse:
        """The V2 answer for ``req``: p_click FP32 [n, k] (padded with -1) and cold_start BOOL [n], of which
        the REST response holds those ``req`` asks for (kserve's ``requested_outputs``); InvalidInput for a
        bad request, an output the model lacks included, before anything is scored."""
        v2_outputs(req)  # an unknown or repeated output name: a 400 before the forward
        instances, k = self.parse_v2(req)
        parsed = self.parse_instances(instances)
        probs, cold, _ = self.score(parsed)
        out = np.full((len(parsed), k), -1.0, dtype=np.float32)
        for i, p in enumerate(probs):
            out[i, : len(p)] = p
        o_p = InferOutput("p_click", list(out.shape), "FP32")
        o_p.set_data_from_numpy(out, binary_data=False)
        o_c = InferOutput("cold_start", [len(cold)], "BOOL")
        o_c.set_data_from_numpy(np.array(cold, dtype=bool), binary_data=False)
        return InferResponse(
            response_id=req.id or "",
            model_name=self.name,
            infer_outputs=[o_p, o_c],
            model_version=self.version,
            requested_outputs=req.request_outputs,
        )

    # ------------------------------------------------------------------ kserve entry point
    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None) -> Any:
        """kserve's entry point: an InferRequest gets :meth:`predict_v2`, a V1 body (dict or JSON text)
        :meth:`predict_instances`, run in a worker thread; InvalidInput (HTTP 400) for bad input."""
        loop = asyncio.get_running_loop()
        if isinstance(payload, InferRequest):
            return await loop.run_in_executor(None, self.predict_v2, payload)
        instances = v1_instances(payload)
        return await loop.run_in_executor(None, self.predict_instances, instances)
