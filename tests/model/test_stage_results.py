"""The stages' typed results and the one scoring path (issue 26).

Every stage returns exactly the fields its result type declares, and the LLM stage's predictions are what
:func:`reclora.scoring.score_samples` gives for the model it saved: the function the serving predictor and the
champion re-score run, so the served score of a sample is the one the evaluation reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reclora.config import deep_merge
from reclora.errors import RecLoRAError
from reclora.io import read_json


def test_stage_results_declare_their_fields_and_the_llm_stage_scores_through_score_samples(tmp_path, tiny_llama_dir):
    from helpers import llm_stage_inputs

    from reclora.crm import load_crm
    from reclora.data import read_prepared
    from reclora.few2many import load_adapter
    from reclora.llm import load_causal_lm
    from reclora.prompts import NOUNS
    from reclora.scoring import PromptStyle, ScoringModel, score_samples
    from reclora.stages import (
        KEY,
        PREDICTIONS,
        CRMResult,
        LLMResult,
        RetrieveResult,
        crm_stage,
        eval_subset,
        llm_stage,
        read_samples,
    )

    data, ret, params = llm_stage_inputs(tmp_path / "inputs")
    # the crm_residual readout with the text path's own loss: the adapter reads both CRM signals and anchors
    small = {
        "crm": {"max_epochs": 1, "mlp": [32, 16], "embed_dim": 8},
        "adapter": {"readout": "crm_residual"},
        "train": {"text_loss_weight": 0.5},
    }
    params = deep_merge(params, small)
    assert set(read_json(ret / "retrieval.json")) == set(RetrieveResult.__annotations__)
    crm = crm_stage(data, ret, tmp_path / "crm", params, progress=False)
    assert set(crm) == set(CRMResult.__annotations__)
    out = tmp_path / "reclora"
    llm = llm_stage("reclora", data, ret, tmp_path / "crm", out, params, model_path=str(tiny_llama_dir), progress=False)
    assert set(llm) == set(LLMResult.__annotations__)
    assert llm["model"] == "reclora+crm_residual" and llm["readout_scale"] != 0.0  # trained: s moved off 0

    # the saved model, loaded afresh, scored on the same evaluation subset through the shared function
    tp = params["train"]
    ev = eval_subset(read_samples(ret)["test"], int(tp["eval_samples"]), int(tp["seed"]))
    written = pd.read_parquet(tmp_path / "reclora" / PREDICTIONS)
    pd.testing.assert_frame_equal(written[KEY], ev[KEY])
    tables, _, meta = read_prepared(data, histories=False)
    base, tok = load_causal_lm(str(tiny_llama_dir))
    adapter = load_adapter(base, tmp_path / "reclora" / "adapter")
    assert adapter.uses_signal and adapter.uses_anchor
    model, feat = load_crm(tmp_path / "crm" / "model")
    style = PromptStyle(NOUNS[meta["dataset"]], float(meta["label_threshold"]))
    scorer = ScoringModel(adapter, tok, model, feat, style, int(tp["max_length"]))
    p = score_samples(
        scorer, ev, tables.items, tables.users, batch_size=int(tp["predict_batch_size"]), precision="fp32"
    )
    # the same weights, prompts, signals, anchors, batches and precision (fp32): the same computation, bit for bit
    np.testing.assert_array_equal(p, written["p"].to_numpy())
    assert llm["eval"]["n"] == len(ev)

    # an adapter that reads the CRM cannot score without one
    with pytest.raises(RecLoRAError, match="trained CRM"):
        no_crm = ScoringModel(adapter, tok, None, None, style, int(tp["max_length"]))
        score_samples(no_crm, ev.iloc[:2], tables.items, tables.users, batch_size=2, precision="fp32")
