"""The RecLoRA training pipeline (KFP v2). One definition for `kfp.local` and a cluster.

prepare -> validate --(pass)--> features, retrieve -> train CRM -> train vanilla LoRA, train RecLoRA
        -> evaluate (vs CRM, vanilla LoRA, the champion re-scored on the same samples; slices; the gate)
        -> register (+ promotion when the gate passes)

Data steps are cached; training steps are retried and, on a cluster, placed on the GPU
node pool (accelerator type/limit, node selector, tolerations from params.yaml). With
``accelerator_limit`` N > 1 a training step runs N torchrun ranks in its pod; with
``gpu.num_nodes`` > 1 it creates a Kubeflow Trainer TrainJob and waits for it. The steps that use
the object store (prepare, retrieve, train, evaluate, register) get the credentials of the Kubernetes
Secret ``pipeline.storage_secret`` as environment variables (kfp-kubernetes), never as parameters.
With ``data.engine: spark`` the prepare step, and with ``features.offline_store: spark`` the features
step, creates a SparkApplication (Kubeflow Spark Operator, ``pipeline.spark``) and waits for it.
Every step requests and is limited to the CPU and memory of ``pipeline.resources`` (per step; a step that
only creates and awaits a TrainJob or SparkApplication takes ``waiter``). prepare's cache key includes the
source's fingerprint (the uncached source_version step), so changed data is prepared again. An object-store
``pipeline.pipeline_root`` (the cluster profile's) is compiled in as the pipeline root.
Compile with a params profile (``profile="cluster"``) for the cluster defaults.
"""

import copy
import dataclasses
from typing import Any

from kfp import dsl, kubernetes

from components import build_components
from reclora.config import load_params_with
from reclora.data.spark_prepare import data_engine
from reclora.errors import ConfigError
from reclora.storage import is_remote

RESOURCE_KEYS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")


def _with_storage_secret(task: Any, secret: dict[str, Any] | None) -> Any:
    """Object-store credentials from the Secret as env vars (required keys, then optional ones)."""
    if secret and secret.get("name"):
        if secret.get("keys"):
            kubernetes.use_secret_as_env(task, secret_name=secret["name"], secret_key_to_env=dict(secret["keys"]))
        if secret.get("optional_keys"):
            kubernetes.use_secret_as_env(
                task, secret_name=secret["name"], secret_key_to_env=dict(secret["optional_keys"]), optional=True
            )
    return task


def step_resources(resources: dict[str, Any] | None, step: str) -> dict[str, str]:
    """``pipeline.resources[step]`` checked: every one of RESOURCE_KEYS, quantities (CPU "500m"/"2", memory
    "4Gi"), requests not above limits. Raises ConfigError naming the step and key."""
    spec = (resources or {}).get(step)
    if not isinstance(spec, dict):
        raise ConfigError(f"params pipeline.resources has no entry for step {step!r}")
    missing = [k for k in RESOURCE_KEYS if k not in spec]
    unknown = sorted(set(spec) - set(RESOURCE_KEYS))
    if missing or unknown:
        raise ConfigError(
            f"pipeline.resources.{step}: needs {', '.join(RESOURCE_KEYS)}"
            f"{f' (missing {missing})' if missing else ''}{f' (unknown {unknown})' if unknown else ''}"
        )
    from kubernetes.utils import parse_quantity

    out = {k: str(spec[k]) for k in RESOURCE_KEYS}
    for kind in ("cpu", "memory"):
        try:
            req, lim = parse_quantity(out[f"{kind}_request"]), parse_quantity(out[f"{kind}_limit"])
        except ValueError as e:
            raise ConfigError(f"pipeline.resources.{step}: {kind}: {e}") from None
        if req > lim:
            raise ConfigError(
                f"pipeline.resources.{step}: {kind}_request {out[f'{kind}_request']} is above "
                f"{kind}_limit {out[f'{kind}_limit']}"
            )
    return out


def _sized(task: Any, resources: dict[str, Any] | None, step: str) -> Any:
    """CPU and memory requests and limits of ``step`` (params ``pipeline.resources``) on ``task``."""
    r = step_resources(resources, step)
    try:
        return (
            task.set_cpu_request(r["cpu_request"])
            .set_cpu_limit(r["cpu_limit"])
            .set_memory_request(r["memory_request"])
            .set_memory_limit(r["memory_limit"])
        )
    except ValueError as e:  # kfp's own format check (e.g. memory "1.5Gi")
        raise ConfigError(f"pipeline.resources.{step}: {e}") from None


def _named(component: Any, name: str) -> Any:
    """``component`` under the name ``name``, so that a task made from it is named ``name`` in the IR.

    kfp 2.17 names a task after its component (``kfp.dsl.pipeline_context.Pipeline.add_task``: the
    component spec's name, made unique with ``-2``, ``-3``, ...); ``set_display_name`` changes only the
    UI label (``taskInfo``), and ``PipelineTask`` has no name setter. A copy whose ``component_spec``
    (a public attribute) carries another name gives the task, its component and executor that name;
    the container command (the same function) is unchanged.
    """
    named = copy.copy(component)
    named.component_spec = dataclasses.replace(component.component_spec, name=name)
    named.name = name
    return named


def _on_gpu_pool(task: Any, gpu: dict[str, Any], retries: int) -> Any:
    task.set_accelerator_type(gpu["accelerator_type"]).set_accelerator_limit(int(gpu["accelerator_limit"]))
    for k, v in (gpu.get("node_selector") or {}).items():
        kubernetes.add_node_selector(task, label_key=k, label_value=str(v))
    for t in gpu.get("tolerations") or []:
        kubernetes.add_toleration(
            task, key=t.get("key"), operator=t.get("operator"), value=t.get("value"), effect=t.get("effect")
        )
    task.set_retry(num_retries=retries, backoff_duration="30s")
    task.set_caching_options(enable_caching=False)
    return task


def build_pipeline(
    cpu_image: str | None = None, gpu_image: str | None = None, gpu: bool = True, profile: str | None = None
) -> Any:
    """The pipeline function for the given images; ``gpu=False`` leaves the training steps unplaced (and one
    rank each). ``profile``: a params.yaml profile for the pipeline's defaults (e.g. "cluster"); it is also
    the default of the pipeline's ``profile`` parameter, so every step reads the same settings."""
    params = load_params_with(None, profile)
    p = params["pipeline"]
    on_spark = (params.get("features") or {}).get("offline_store") == "spark"
    prepare_on_spark = data_engine(params) == "spark"
    c = build_components(cpu_image or p["cpu_image"], gpu_image or p["gpu_image"])
    retries = int(p["train_retries"])
    secret = p.get("storage_secret")
    nodes = int(p["gpu"].get("num_nodes", 1)) if gpu else 1
    nproc = int(p["gpu"]["accelerator_limit"]) if gpu else 1
    serving = p.get("serving") or {}
    res = p.get("resources")
    root = str(p.get("pipeline_root") or "")

    @dsl.pipeline(
        name=p["name"],
        description="RecLoRA: CRM + personalized LoRA on an LLM, Few2Many, evaluated and registered.",
        pipeline_root=root if is_remote(root) else None,
    )
    def reclora_pipeline(
        dataset: str = "synthetic",
        source_path: str = "",
        data_version_tag: str = "",
        model_path: str = "",
        profile: str = profile or "",
        overrides: dict = {},  # noqa: B006 (a KFP pipeline parameter: its default is a literal in the IR)
        retrieval_mode: str = "relevance",
        registry_uri: str = p["registry_uri"],
        checkpoint_uri: str = p.get("checkpoint_uri") or "",
        deploy: bool = bool(serving.get("deploy", False)),
    ):
        src = c.source_version(source_path=source_path, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        src.set_display_name("source version").set_caching_options(enable_caching=False)  # the data may have changed
        _sized(_with_storage_secret(src, secret), res, "source_version")
        prepare = c.prepare_spark if prepare_on_spark else c.prepare  # data.engine: a SparkApplication or this pod
        prep = prepare(
            dataset=dataset,
            source_path=source_path,
            version_tag=data_version_tag,
            profile=profile,
            overrides=overrides,
            source_fingerprint=src.output,
        )
        prep.set_display_name("prepare data (Spark)" if prepare_on_spark else "prepare data")
        prep.set_caching_options(enable_caching=True)
        _sized(_with_storage_secret(prep, secret), res, "waiter" if prepare_on_spark else "prepare")
        val = c.validate(data=prep.outputs["data"], profile=profile, overrides=overrides)
        val.set_display_name("validate (Great Expectations)").set_caching_options(enable_caching=True)
        _sized(val, res, "validate")
        with dsl.If(val.outputs["Output"] == True, name="data-passed-validation"):  # noqa: E712
            if on_spark:  # a SparkApplication (Kubeflow Spark Operator) runs the stage on Feast's Spark store
                feat = c.features_spark(data=prep.outputs["data"], profile=profile, overrides=overrides)
                feat.set_display_name("features (Feast on Spark)")
                _sized(_with_storage_secret(feat, secret), res, "waiter")
            else:
                feat = c.features(data=prep.outputs["data"], profile=profile, overrides=overrides)
                _sized(feat.set_display_name("features (Feast)"), res, "features")
            feat.set_caching_options(enable_caching=True)
            ret = c.retrieve(
                data=prep.outputs["data"],
                model_path=model_path,
                mode=retrieval_mode,
                profile=profile,
                overrides=overrides,
            ).set_display_name("samples + retrieve")
            ret.set_caching_options(enable_caching=True)
            _sized(_with_storage_secret(ret, secret), res, "retrieve")  # model_path may be a bucket URI
            crm = c.train_crm(
                data=prep.outputs["data"],
                retrieved=ret.outputs["retrieved"],
                feature_store=feat.outputs["feature_store"],
                profile=profile,
                overrides=overrides,
            ).set_display_name("train CRM")
            crm.set_retry(num_retries=retries).set_caching_options(enable_caching=False)
            _sized(crm, res, "train_crm")
            llm = {}
            for kind in ("lora", "reclora"):
                train = _named(c.train_llm, f"train-{kind}")  # the tasks train-lora and train-reclora
                t = train(
                    kind=kind,
                    data=prep.outputs["data"],
                    retrieved=ret.outputs["retrieved"],
                    crm=crm.outputs["crm"],
                    feature_store=feat.outputs["feature_store"],
                    model_path=model_path,
                    gate="crm",
                    profile=profile,
                    overrides=overrides,
                    nproc_per_node=nproc,
                    num_nodes=nodes,
                    checkpoint_uri=checkpoint_uri,
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
                )
                t.set_display_name("train vanilla LoRA" if kind == "lora" else "train RecLoRA")
                if gpu and nodes <= 1:
                    llm[kind] = _on_gpu_pool(t, p["gpu"], retries)
                else:  # locally, or a multi-node TrainJob: this pod only creates the job and waits
                    llm[kind] = t.set_retry(num_retries=retries, backoff_duration="30s") if gpu else t
                    llm[kind].set_caching_options(enable_caching=False)
                _sized(_with_storage_secret(llm[kind], secret), res, "waiter" if nodes > 1 else "train_llm")
            llm["reclora"].after(llm["lora"])  # one LLM at a time on a small node
            ev = c.evaluate(
                crm=crm.outputs["crm"],
                lora=llm["lora"].outputs["adapter"],
                reclora=llm["reclora"].outputs["adapter"],
                data=prep.outputs["data"],
                feature_store=feat.outputs["feature_store"],
                registry_uri=registry_uri,
                data_version=prep.outputs["Output"],
                profile=profile,
                overrides=overrides,
            ).set_display_name("evaluate")
            ev.set_caching_options(enable_caching=False)
            _sized(_with_storage_secret(ev, secret), res, "evaluate")
            reg = c.register(
                crm=crm.outputs["crm"],
                reclora=llm["reclora"].outputs["adapter"],
                retrieved=ret.outputs["retrieved"],
                data=prep.outputs["data"],
                evaluation=ev.outputs["report_files"],
                registry_uri=registry_uri,
                data_version=prep.outputs["Output"],
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                profile=profile,
                overrides=overrides,
                deploy=deploy,
            )
            reg.set_display_name("register + promote").set_caching_options(enable_caching=False)
            _sized(_with_storage_secret(reg, secret), res, "register")

    return reclora_pipeline
