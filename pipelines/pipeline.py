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
Compile with a params profile (``profile="cluster"``) for the cluster defaults.
"""


from typing import Any, Optional

from kfp import dsl, kubernetes

from components import build_components
from reclora.config import load_params_with
from reclora.data.spark_prepare import data_engine


def _with_storage_secret(task: Any, secret: dict[str, Any] | None) -> Any:
    """Object-store credentials from the Secret as env vars (required keys, then optional ones)."""
    if secret and secret.get("name"):
        if secret.get("keys"):
            kubernetes.use_secret_as_env(task, secret_name=secret["name"], secret_key_to_env=dict(secret["keys"]))
        if secret.get("optional_keys"):
            kubernetes.use_secret_as_env(task, secret_name=secret["name"], secret_key_to_env=dict(secret["optional_keys"]),
                                         optional=True)  # fmt: skip
    return task


def _on_gpu_pool(task: Any, gpu: dict[str, Any], retries: int) -> Any:
    task.set_accelerator_type(gpu["accelerator_type"]).set_accelerator_limit(int(gpu["accelerator_limit"]))
    for k, v in (gpu.get("node_selector") or {}).items():
        kubernetes.add_node_selector(task, label_key=k, label_value=str(v))
    for t in gpu.get("tolerations") or []:
        kubernetes.add_toleration(task, key=t.get("key"), operator=t.get("operator"), value=t.get("value"),
                                  effect=t.get("effect"))  # fmt: skip
    task.set_retry(num_retries=retries, backoff_duration="30s")
    task.set_caching_options(enable_caching=False)
    return task


def build_pipeline(
    cpu_image: Optional[str] = None, gpu_image: Optional[str] = None, gpu: bool = True, profile: Optional[str] = None
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

    @dsl.pipeline(name=p["name"], description="RecLoRA: CRM + personalized LoRA on an LLM, Few2Many, evaluated and registered.")
    def reclora_pipeline(
        dataset: str = "synthetic",
        source_path: str = "",
        data_version_tag: str = "",
        model_path: str = "",
        profile: str = profile or "",
        overrides: dict = {},
        retrieval_mode: str = "relevance",
        registry_uri: str = p["registry_uri"],
        checkpoint_uri: str = p.get("checkpoint_uri") or "",
        deploy: bool = bool(serving.get("deploy", False)),
    ):
        prepare = c.prepare_spark if prepare_on_spark else c.prepare  # data.engine: a SparkApplication or this pod
        prep = prepare(dataset=dataset, source_path=source_path, version_tag=data_version_tag, profile=profile,
                       overrides=overrides)  # fmt: skip
        prep.set_display_name("prepare data (Spark)" if prepare_on_spark else "prepare data")
        prep.set_caching_options(enable_caching=True)
        _with_storage_secret(prep, secret)
        val = c.validate(data=prep.outputs["data"], profile=profile, overrides=overrides)
        val.set_display_name("validate (Great Expectations)").set_caching_options(enable_caching=True)
        with dsl.If(val.outputs["Output"] == True, name="data-passed-validation"):  # noqa: E712
            if on_spark:  # a SparkApplication (Kubeflow Spark Operator) runs the stage on Feast's Spark store
                feat = c.features_spark(data=prep.outputs["data"], profile=profile, overrides=overrides)
                feat.set_display_name("features (Feast on Spark)")
                _with_storage_secret(feat, secret)
            else:
                feat = c.features(data=prep.outputs["data"]).set_display_name("features (Feast)")
            feat.set_caching_options(enable_caching=True)
            ret = c.retrieve(data=prep.outputs["data"], model_path=model_path, mode=retrieval_mode, profile=profile,
                             overrides=overrides).set_display_name("samples + retrieve")  # fmt: skip
            ret.set_caching_options(enable_caching=True)
            _with_storage_secret(ret, secret)  # model_path may be a bucket URI
            crm = c.train_crm(data=prep.outputs["data"], retrieved=ret.outputs["retrieved"],
                              feature_store=feat.outputs["feature_store"], profile=profile,
                              overrides=overrides).set_display_name("train CRM")  # fmt: skip
            crm.set_retry(num_retries=retries).set_caching_options(enable_caching=False)
            llm = {}
            for kind in ("lora", "reclora"):
                t = c.train_llm(kind=kind, data=prep.outputs["data"], retrieved=ret.outputs["retrieved"],
                                crm=crm.outputs["crm"], feature_store=feat.outputs["feature_store"],
                                model_path=model_path, gate="crm", profile=profile,
                                overrides=overrides, nproc_per_node=nproc, num_nodes=nodes,
                                checkpoint_uri=checkpoint_uri, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER)  # fmt: skip
                t.set_display_name("train vanilla LoRA" if kind == "lora" else "train RecLoRA")
                if gpu and nodes <= 1:
                    llm[kind] = _on_gpu_pool(t, p["gpu"], retries)
                else:  # locally, or a multi-node TrainJob: this pod only creates the job and waits
                    llm[kind] = t.set_retry(num_retries=retries, backoff_duration="30s") if gpu else t
                    llm[kind].set_caching_options(enable_caching=False)
                _with_storage_secret(llm[kind], secret)
            llm["reclora"].after(llm["lora"])  # one LLM at a time on a small node
            ev = c.evaluate(crm=crm.outputs["crm"], lora=llm["lora"].outputs["adapter"],
                            reclora=llm["reclora"].outputs["adapter"], data=prep.outputs["data"],
                            feature_store=feat.outputs["feature_store"], registry_uri=registry_uri,
                            data_version=prep.outputs["Output"], profile=profile,
                            overrides=overrides).set_display_name("evaluate")  # fmt: skip
            ev.set_caching_options(enable_caching=False)
            _with_storage_secret(ev, secret)
            reg = c.register(crm=crm.outputs["crm"], reclora=llm["reclora"].outputs["adapter"],
                             retrieved=ret.outputs["retrieved"], data=prep.outputs["data"],
                             evaluation=ev.outputs["report_files"], registry_uri=registry_uri,
                             data_version=prep.outputs["Output"], run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                             profile=profile, overrides=overrides, deploy=deploy)  # fmt: skip
            reg.set_display_name("register + promote").set_caching_options(enable_caching=False)
            _with_storage_secret(reg, secret)

    return reclora_pipeline
