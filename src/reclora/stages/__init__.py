"""The training stages as file-in, file-out functions: what the CLI, DVC and the KFP components call.

    retrieve_stage   prepared data -> samples with long/short retrieved histories + item embeddings
    crm_stage        retrieved samples -> trained CRM + its test predictions
    llm_stage        retrieved samples + CRM -> Few2Many-trained adapter (vanilla LoRA or RecLoRA)
                     + its predictions on the evaluation subset
    evaluate_stage   predictions of every model (+ the champion re-scored on the same samples) -> report
                     (metrics.json with slices and the promotion gate's evidence, plots, report.html)
    register_stage   the new version in the registry, promoted when the gate passes

One module per stage (``reclora.stages.retrieve``, ``.crm``, ``.llm``, ``.evaluate``, ``.register``; what
several share in ``.common``). Every stage takes the run's params (loaded at the edge: CLI, component,
torchrun entry point), writes its output directory atomically and returns a typed, JSON-able summary
(``RetrieveResult``, ``CRMResult``, ``LLMResult``, ``EvaluateResult``, ``RegisterResult``).
"""

from reclora.stages.common import KEY, PREDICTIONS, eval_subset, read_samples, shared_features
from reclora.stages.crm import CRMResult, crm_stage
from reclora.stages.evaluate import EvaluateResult, evaluate_stage, evaluated_samples
from reclora.stages.llm import LLMResult, llm_stage
from reclora.stages.register import RegisterResult, register_stage
from reclora.stages.retrieve import RetrieveResult, retrieve_stage

__all__ = [
    "KEY",
    "PREDICTIONS",
    "CRMResult",
    "EvaluateResult",
    "LLMResult",
    "RegisterResult",
    "RetrieveResult",
    "crm_stage",
    "eval_subset",
    "evaluate_stage",
    "evaluated_samples",
    "llm_stage",
    "read_samples",
    "register_stage",
    "retrieve_stage",
    "shared_features",
]
