"""The conventional recommendation model (CRM): a DIN-style CTR model whose last hidden vector h
is RecLoRA's personal signal. Plain torch; saved as safetensors + JSON."""

from reclora.crm.features import CRMFeaturizer
from reclora.crm.model import BATCH_KEYS, DIN, CRMConfig
from reclora.crm.train import (
    CONFIG_NAME,
    FEATURES_NAME,
    HISTORY_NAME,
    WEIGHTS_NAME,
    crm_signals,
    evaluate_crm,
    hidden_vectors,
    load_crm,
    predict,
    save_crm,
    signal_width,
    train_crm,
)

__all__ = [
    "BATCH_KEYS",
    "CONFIG_NAME",
    "CRMConfig",
    "CRMFeaturizer",
    "DIN",
    "FEATURES_NAME",
    "HISTORY_NAME",
    "WEIGHTS_NAME",
    "crm_signals",
    "evaluate_crm",
    "hidden_vectors",
    "load_crm",
    "predict",
    "save_crm",
    "signal_width",
    "train_crm",
]
