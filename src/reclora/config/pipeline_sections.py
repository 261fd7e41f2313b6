"""The typed params section ``pipeline`` and its groups: the storage secret, per-step resources, the GPU pool,
the promotion gate's rules (:class:`PromotionRules`, what :mod:`reclora.registry.gate` applies), serving,
multi-node training (TrainJob) and the SparkApplications. Values live in params.yaml only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from reclora.config.fields import Section, is_number, setting
from reclora.errors import ConfigError

#: a Kubernetes quantity: "500m", "2", "4Gi", or a plain number
Quantity = str | int | float

UNSCORED_RULES = ("refuse", "baseline")


@dataclass(frozen=True)
class StorageSecretSection(Section):
    """``pipeline.storage_secret``: a Kubernetes Secret whose keys become env vars of the object-store steps."""

    KEY: ClassVar[str] = "pipeline.storage_secret"

    name: str = setting("The Secret's name ('' = none: local runs).")
    keys: dict[str, str] = setting("Env var -> secret key, required.")
    optional_keys: dict[str, str] = setting("Env var -> secret key, may be absent from the Secret.")


@dataclass(frozen=True)
class StepResources(Section):
    """One step's CPU and memory requests and limits (Kubernetes quantities; request <= limit, checked by
    pipelines.pipeline.step_resources)."""

    KEY: ClassVar[str] = "pipeline.resources.<step>"

    cpu_request: Quantity = setting("CPU request, e.g. 250m or '2'.")
    cpu_limit: Quantity = setting("CPU limit; torch's threads follow it.")
    memory_request: Quantity = setting("Memory request, e.g. 4Gi.")
    memory_limit: Quantity = setting("Memory limit.")


@dataclass(frozen=True)
class ResourcesSection(Section):
    """``pipeline.resources``: the CPU and memory of every step's pod."""

    KEY: ClassVar[str] = "pipeline.resources"

    source_version: StepResources = setting("The raw source's fingerprint step.")
    prepare: StepResources = setting("The prepare step (pandas engine).")
    validate: StepResources = setting("The Great Expectations gate.")
    features: StepResources = setting("The Feast features step (one machine).")
    retrieve: StepResources = setting("Long-short retrieval (item embeddings with the base LLM).")
    train_crm: StepResources = setting("CRM training.")
    train_llm: StepResources = setting("LLM training, one node (with its GPUs: pipeline.gpu).")
    evaluate: StepResources = setting("The evaluate stage.")
    register: StepResources = setting("Registration and promotion.")
    waiter: StepResources = setting("A step that only creates and awaits a TrainJob or SparkApplication.")


@dataclass(frozen=True)
class GPUSection(Section):
    """``pipeline.gpu``: the training steps' node pool (nothing cloud-specific)."""

    KEY: ClassVar[str] = "pipeline.gpu"

    accelerator_type: str = setting("Extended resource name of the GPU, e.g. nvidia.com/gpu.")
    accelerator_limit: int = setting("GPUs per training pod; N > 1 runs N torchrun ranks in the pod.")
    num_nodes: int = setting("> 1: the step runs a Kubeflow Trainer TrainJob on that many nodes.")
    node_selector: dict[str, str] = setting("Node labels the training pods are placed by.")
    tolerations: tuple[dict[str, Any], ...] = setting("Kubernetes tolerations of the training pods.")

    def __post_init__(self) -> None:
        self.at_least(0, "accelerator_limit")
        self.at_least(1, "num_nodes")


@dataclass(frozen=True)
class PromotionRules(Section):
    """The promotion gate's settings (params ``pipeline.promotion``; :mod:`reclora.registry.gate` applies them).

    The defaults are params.yaml's (tests/code/test_configs.py keeps them equal); they serve callers that build
    the rules without params (``PromotionRules()``).
    """

    KEY: ClassVar[str] = "pipeline.promotion"

    baseline: str = setting("The model of the same run the challenger must beat ('' = none).", default="CRM")
    baseline_margin: float = setting(
        "Promote only when the lower end of the interval of AUC(challenger) - AUC(baseline) is above this.", default=0.0
    )
    champion_margin: float = setting(
        "... and of AUC(challenger) - AUC(champion re-scored on the same samples) (negative: at most this much worse).",
        default=-0.002,
    )
    logloss_tolerance: float = setting(
        "And LogLoss(challenger) <= LogLoss(champion) + this, same samples.", default=0.005
    )
    max_slice_drop: float | None = setting(
        "null, or refuse a challenger whose AUC on any slice with enough "
        "samples is more than this below the baseline's or the champion's.",
        default=None,
    )
    unscored_champion: str = setting(
        "A champion of the same data that cannot be re-scored: refuse | baseline (the baseline rule alone).",
        default="refuse",
    )

    def __post_init__(self) -> None:
        for name in ("baseline_margin", "champion_margin", "logloss_tolerance"):
            v = getattr(self, name)
            self.require(is_number(v) and math.isfinite(v) and -1.0 <= v <= 1.0, name, "be a number in [-1, 1]")
        self.require(self.logloss_tolerance >= 0, "logloss_tolerance", "be >= 0")
        d = self.max_slice_drop
        self.require(d is None or (is_number(d) and 0.0 <= d <= 1.0), "max_slice_drop", "be null or a number in [0, 1]")
        self.require(
            self.unscored_champion in UNSCORED_RULES, "unscored_champion", f"be one of {', '.join(UNSCORED_RULES)}"
        )
        self.require(isinstance(self.baseline, str), "baseline", 'be a model name (or "" for none)')

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str | None = None) -> PromotionRules:
        """Strictly from the whole ``pipeline.promotion`` mapping (:meth:`Section.from_dict`), nulls read as
        :meth:`from_params` reads them."""
        if isinstance(d, Mapping):
            d = {
                k: ("" if k == "baseline" else getattr(cls, k, None)) if v is None and k != "max_slice_drop" else v
                for k, v in d.items()
            }
        return super().from_dict(d, where)

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None) -> PromotionRules:
        """From params ``pipeline.promotion``, as it may be partial (unknown keys are refused, so a typo is not
        ignored; a null ``baseline`` is none, another null value its default)."""
        p = dict(p or {})
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(p) - known)
        if extra:
            raise ConfigError(f"unknown promotion setting(s) {', '.join(extra)}; known: {', '.join(sorted(known))}")
        if "baseline" in p and p["baseline"] is None:
            p["baseline"] = ""  # null: no baseline
        return cls(**{k: (v if v is not None or k == "max_slice_drop" else getattr(cls, k)) for k, v in p.items()})

    def as_dict(self) -> dict[str, Any]:
        """The rules as a plain mapping (what the gate's decision records)."""
        return asdict(self)


@dataclass(frozen=True)
class ServingSection(Section):
    """``pipeline.serving``: the KServe InferenceService a promotion rolls."""

    KEY: ClassVar[str] = "pipeline.serving"

    deploy: bool = setting("true: the register step patches its storageUri on promotion.")
    service: str = setting("The InferenceService's name.")
    namespace: str = setting("Its namespace, used outside a pod (inside, the pod's own).")
    storage_root: str = setting("'' = registry_uri (object stores); a volume registry: pvc://<claim>.")


@dataclass(frozen=True)
class TrainJobSection(Section):
    """``pipeline.trainjob``: multi-node training (gpu.num_nodes > 1) as a Kubeflow Trainer TrainJob."""

    KEY: ClassVar[str] = "pipeline.trainjob"

    runtime: str = setting("The ClusterTrainingRuntime (infra/k8s/trainer).")
    namespace: str = setting("Its namespace, used outside a pod (inside, the pod's own).")
    poll_seconds: float = setting("Seconds between status polls.")
    timeout_seconds: float = setting("Seconds the step waits for the TrainJob at most.")
    resources_per_node: dict[str, dict[str, Quantity]] = setting("requests and limits of every node's pod.")

    def __post_init__(self) -> None:
        self.positive("poll_seconds", "timeout_seconds")


@dataclass(frozen=True)
class SparkDriverSection(Section):
    """``pipeline.spark.driver``: the Spark driver pod."""

    KEY: ClassVar[str] = "pipeline.spark.driver"

    cores: int = setting("CPU cores.")
    memory: str = setting("Memory (Spark's form, e.g. 4g).")

    def __post_init__(self) -> None:
        self.at_least(1, "cores")


@dataclass(frozen=True)
class SparkExecutorSection(Section):
    """``pipeline.spark.executor``: the Spark executor pods."""

    KEY: ClassVar[str] = "pipeline.spark.executor"

    instances: int = setting("Executor pods.")
    cores: int = setting("CPU cores each.")
    memory: str = setting("Memory each (Spark's form, e.g. 8g).")

    def __post_init__(self) -> None:
        self.at_least(1, "instances", "cores")


@dataclass(frozen=True)
class SparkSection(Section):
    """``pipeline.spark``: the SparkApplications of the prepare step (data.engine spark) and the features step
    (features.offline_store spark)."""

    KEY: ClassVar[str] = "pipeline.spark"

    image: str = setting("The Spark image (the CPU image + a JRE and pyspark).")
    main_application_file: str = setting("Driver program of the features step.")
    prepare_application_file: str = setting("Driver program of the prepare step.")
    spark_version: str = setting("The Spark of the image (pyproject.toml's pyspark pin).")
    namespace: str = setting("Namespace, used outside a pod (inside, the pod's own).")
    service_account: str = setting("The driver's service account (it creates the executor pods).")
    work_claim: str = setting("ReadWriteMany claim the driver and executors mount at /workspace.")
    driver: SparkDriverSection = setting("The driver pod.")
    executor: SparkExecutorSection = setting("The executor pods.")
    poll_seconds: float = setting("Seconds between status polls.")
    timeout_seconds: float = setting("Seconds the step waits for the application at most.")

    def __post_init__(self) -> None:
        self.positive("poll_seconds", "timeout_seconds")


@dataclass(frozen=True)
class PipelineSection(Section):
    """``pipeline``: the KFP pipeline, its images, storage, steps' resources, gate and deployment."""

    KEY: ClassVar[str] = "pipeline"

    name: str = setting("The pipeline's name in KFP.")
    cpu_image: str = setting("Image of the data steps (infra/docker/Dockerfile.cpu).")
    gpu_image: str = setting("Image of the training steps (infra/docker/Dockerfile.gpu).")
    pipeline_root: str = setting("Where task outputs go: a local path, or an object-store URI compiled into the IR.")
    registry_uri: str = setting("The model registry: any fsspec URI.")
    checkpoint_uri: str = setting("fsspec URI Few2Many checkpoints are mirrored to per run and task ('' = local only).")
    storage_secret: StorageSecretSection = setting("Object-store credentials of the steps.")
    train_retries: int = setting("Retries of a failed training step (it resumes from its checkpoint).")
    resources: ResourcesSection = setting("CPU and memory of every step's pod.")
    gpu: GPUSection = setting("The training steps' node pool.")
    promotion: PromotionRules = setting("The promotion gate (reclora.registry.gate).")
    serving: ServingSection = setting("The KServe InferenceService a promotion rolls.")
    trainjob: TrainJobSection = setting("Multi-node training.")
    spark: SparkSection = setting("The SparkApplications.")

    def __post_init__(self) -> None:
        self.at_least(0, "train_retries")
