"""The compiled pipeline IR: components, GPU placement on the training tasks only, retries, caching,
images; and the KFP client requests `submit` and `schedule` send (no server here)."""

import ast
from pathlib import Path

import pytest
import yaml

from pipelines.remote import compile_pipeline, schedule, submit
from reclora.config import load_params

STAGES = {
    "source-version",
    "prepare",
    "validate",
    "features",
    "retrieve",
    "train-crm",
    "train-lora",
    "train-reclora",
    "evaluate",
    "register",
}
TRAIN_LLM = {"train-lora", "train-reclora"}


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    out = compile_pipeline(
        tmp_path_factory.mktemp("ir") / "pipeline.yaml", "registry.example/cpu:1.2.3", "registry.example/gpu:1.2.3"
    )
    docs = list(yaml.safe_load_all(out.read_text()))
    return docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"], out


def _tasks(spec):
    """All tasks, including those inside the validation condition's sub-DAG."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_every_component_is_present_with_its_image(ir):
    spec, _, _ = ir
    execs = spec["deploymentSpec"]["executors"]
    assert {k.removeprefix("exec-") for k in execs} == STAGES
    for name, e in execs.items():
        want = "registry.example/gpu:1.2.3" if name.removeprefix("exec-") in TRAIN_LLM else "registry.example/cpu:1.2.3"
        assert e["container"]["image"] == want, name
        # nothing is installed at run time: the image has the project
        assert "pip install" not in " ".join(e["container"]["command"]), name


def test_the_two_llm_trainings_are_tasks_named_for_what_they_train(ir):
    """train-lora and train-reclora are the real task names (not KFP's automatic train-llm-2), each
    passes its own kind, and both run the one train_llm component function."""
    spec, _, _ = ir
    tasks = _tasks(spec)
    for kind in ("lora", "reclora"):
        task = tasks[f"train-{kind}"]
        assert task["inputs"]["parameters"]["kind"]["runtimeValue"]["constant"] == kind
        assert task["componentRef"]["name"] == f"comp-train-{kind}"
        assert task["taskInfo"]["name"] == ("train vanilla LoRA" if kind == "lora" else "train RecLoRA")
        args = spec["deploymentSpec"]["executors"][f"exec-train-{kind}"]["container"]["args"]
        assert args[args.index("--function_to_execute") + 1] == "train_llm"
    assert tasks["train-reclora"]["dependentTasks"].count("train-lora") == 1  # one LLM at a time
    assert not any(name.endswith(("-2", "-3")) for name in tasks)


def test_gpu_settings_and_tolerations_only_on_the_llm_training_tasks(ir):
    spec, k8s, _ = ir
    gpu = load_params()["pipeline"]["gpu"]
    execs = spec["deploymentSpec"]["executors"]
    for name, e in execs.items():
        res = e["container"].get("resources", {})
        if name.removeprefix("exec-") in TRAIN_LLM:
            assert res["accelerator"]["resourceType"] == gpu["accelerator_type"]
            assert int(res["accelerator"]["resourceCount"]) == gpu["accelerator_limit"]
            assert k8s[name]["nodeSelector"]["labels"] == gpu["node_selector"]
            assert k8s[name]["tolerations"] == gpu["tolerations"]
        else:
            assert "accelerator" not in res, name
            assert name not in k8s, name


def test_retries_on_train_steps_and_caching_on_data_steps(ir):
    spec, _, _ = ir
    tasks = _tasks(spec)
    retries = load_params()["pipeline"]["train_retries"]
    for name in ("train-crm", *TRAIN_LLM):
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == retries
        assert not tasks[name]["cachingOptions"].get("enableCache", False)
    for name in ("prepare", "validate", "features", "retrieve"):
        assert tasks[name]["cachingOptions"]["enableCache"] is True
    for name in ("evaluate", "register"):
        assert not tasks[name]["cachingOptions"].get("enableCache", False)


def test_training_runs_only_when_validation_passed(ir):
    spec, _, _ = ir
    root = spec["root"]["dag"]["tasks"]
    assert {"source-version", "prepare", "validate"} <= set(root)
    cond = [t for t in root.values() if "triggerPolicy" in t]
    assert len(cond) == 1 and "validate-Output" in cond[0]["triggerPolicy"]["condition"]
    inner = spec["components"][cond[0]["componentRef"]["name"]]["dag"]["tasks"]
    assert {"features", "retrieve", "train-crm", *TRAIN_LLM, "evaluate", "register"} == set(inner)


def test_pipeline_parameters(ir):
    spec, _, _ = ir
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {
        "dataset",
        "source_path",
        "data_version_tag",
        "model_path",
        "profile",
        "overrides",
        "retrieval_mode",
        "registry_uri",
    } <= set(params)


def test_components_are_thin_wrappers_of_the_library():
    """Each component imports only the library (and stdlib), never defines model logic itself."""
    comps = Path(__file__).resolve().parents[2] / "components"
    for f in comps.glob("*/component.py"):
        tree = ast.parse(f.read_text())
        mods = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        mods |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert mods <= {"kfp", "reclora", "typing", "shutil", "sys", "collections"}, (f, mods)
        assert len(f.read_text().splitlines()) < 60, f


def test_library_knows_nothing_of_kfp():
    src = Path(__file__).resolve().parents[2] / "src" / "reclora"
    for f in src.rglob("*.py"):
        if f.parent.name == "cli":
            continue
        tree = ast.parse(f.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module:
                assert not n.module.startswith("kfp"), f
            if isinstance(n, ast.Import):
                assert not any(a.name.startswith("kfp") for a in n.names), f


class _Recorder:
    """Stands in for the KFP REST API (no server here): records the request objects."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            from types import SimpleNamespace

            return SimpleNamespace(run_id="run-1", recurring_run_id="rr-1", experiment_id="exp-1")

        return call


@pytest.fixture()
def client(monkeypatch):
    import kfp

    rec = _Recorder()
    real_init = kfp.Client.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self._experiment_api = rec
        self._run_api = rec
        self._recurring_run_api = rec
        self._pipelines_api = rec
        self._upload_api = rec

    monkeypatch.setattr(kfp.Client, "__init__", init)
    monkeypatch.setattr(kfp.Client, "get_kfp_healthz", lambda self, *a, **k: type("H", (), {"multi_user": False})())
    monkeypatch.setattr(kfp.Client, "get_experiment", lambda self, **k: type("E", (), {"experiment_id": "exp-1"})())
    return rec


def test_schedule_sends_a_cron_recurring_run_without_catchup(ir, client):
    _, _, package = ir
    schedule("http://127.0.0.1:1", package, "0 0 3 * * *", {"dataset": "ml-1m"})
    name, _, kwargs = next(c for c in client.calls if c[0] == "recurring_run_service_create_recurring_run")
    body = kwargs["recurring_run"]
    assert body.trigger.cron_schedule.cron == "0 0 3 * * *"
    assert body.no_catchup is True and body.max_concurrency == 1
    assert body.experiment_id == "exp-1" and body.service_account == "reclora-pipeline-runner"
    assert body.runtime_config.parameters["dataset"] == "ml-1m"
    spec = body.pipeline_spec.get("pipeline_spec", body.pipeline_spec)
    assert spec["pipelineInfo"]["name"] == load_params()["pipeline"]["name"]
    assert "platform_spec" in body.pipeline_spec  # the GPU node-pool settings travel with it


def test_schedule_rejects_a_five_field_cron(ir):
    with pytest.raises(ValueError, match="6 fields"):
        schedule("http://127.0.0.1:1", ir[2], "0 3 * * *")


def test_submit_sends_a_run_with_the_compiled_spec(ir, client):
    _, _, package = ir
    submit("http://127.0.0.1:1", package, {"dataset": "ml-100k", "source_path": "/data/ml-100k"})
    name, _, kwargs = next(c for c in client.calls if c[0] == "run_service_create_run")
    run = kwargs.get("run") or kwargs.get("body")
    assert run.experiment_id == "exp-1" and run.service_account == "reclora-pipeline-runner"
    assert run.runtime_config.parameters == {"dataset": "ml-100k", "source_path": "/data/ml-100k"}
    spec = run.pipeline_spec.get("pipeline_spec", run.pipeline_spec)
    assert set(spec["deploymentSpec"]["executors"]) == {f"exec-{s}" for s in STAGES}


# ------------------------------------------------------------------ the cluster overlay
STORAGE_TASKS = {"source-version", "prepare", "retrieve", "train-lora", "train-reclora", "evaluate", "register"}


def _compile(tmp_path, profile=None):
    out = compile_pipeline(tmp_path / "p.yaml", "registry.example/cpu:1", "registry.example/gpu:1", profile=profile)
    docs = list(yaml.safe_load_all(out.read_text()))
    k8s = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return docs[0], k8s, out.read_text()


def test_cluster_profile_uses_object_storage_and_the_secret_by_reference_only(tmp_path):
    from reclora.config import load_params_with

    spec, k8s, text = _compile(tmp_path, "cluster")
    p = load_params_with(None, "cluster")["pipeline"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["registry_uri"]["defaultValue"] == p["registry_uri"] and p["registry_uri"].startswith("s3://")
    assert params["checkpoint_uri"]["defaultValue"] == p["checkpoint_uri"] and p["checkpoint_uri"].startswith("s3://")
    assert params["profile"]["defaultValue"] == "cluster" and params["deploy"]["defaultValue"] is True
    secret = p["storage_secret"]
    for name in STAGES:
        refs = k8s.get(f"exec-{name}", {}).get("secretAsEnv", [])
        if name not in STORAGE_TASKS:
            assert refs == [], name
            continue
        assert [r["secretName"] for r in refs] == [secret["name"]] * 2, name
        required = {e["envVar"]: e["secretKey"] for e in refs[0]["keyToEnv"]}
        optional = {e["envVar"]: e["secretKey"] for e in refs[1]["keyToEnv"]}
        assert required == secret["keys"] and refs[0]["optional"] is False, name
        assert optional == secret["optional_keys"] and refs[1]["optional"] is True, name
    # credentials appear only as Secret references (env var name + key name), nowhere else in the IR
    assert text.count("AWS_SECRET_ACCESS_KEY") == 2 * len(STORAGE_TASKS)
    # the training steps mirror checkpoints per run and task
    tasks = _tasks(spec)
    for name in TRAIN_LLM:
        inp = tasks[name]["inputs"]["parameters"]
        assert inp["checkpoint_uri"] == {"componentInputParameter": "pipelinechannel--checkpoint_uri"}
        assert inp["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
        assert inp["task_name"]["runtimeValue"]["constant"] == "{{$.pipeline_task_name}}"
    assert tasks["register"]["inputs"]["parameters"]["deploy"] == {"componentInputParameter": "pipelinechannel--deploy"}


def test_local_defaults_have_no_secret_and_local_paths(ir):
    spec, k8s, _ = ir
    assert not any("secretAsEnv" in e for e in k8s.values())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["checkpoint_uri"].get("defaultValue", "") == "" and params["deploy"]["defaultValue"] is False
    assert "://" not in params["registry_uri"]["defaultValue"]


def _with_gpu(tmp_path, monkeypatch, **gpu):
    from reclora.config import deep_merge

    p = deep_merge(load_params(), {"pipeline": {"gpu": gpu}})
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    monkeypatch.setenv("RECLORA_PARAMS", str(f))
    return _compile(tmp_path)


def test_n_gpus_mean_n_ranks_in_the_training_pod(tmp_path, monkeypatch):
    spec, k8s, _ = _with_gpu(tmp_path, monkeypatch, accelerator_limit=4)
    tasks = _tasks(spec)
    for name in TRAIN_LLM:
        inp = tasks[name]["inputs"]["parameters"]
        assert inp["nproc_per_node"]["runtimeValue"]["constant"] == 4
        assert inp["num_nodes"]["runtimeValue"]["constant"] == 1
        res = spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"]["resources"]
        assert int(res["accelerator"]["resourceCount"]) == 4


def test_multi_node_training_steps_only_create_the_trainjob(tmp_path, monkeypatch):
    spec, k8s, _ = _with_gpu(tmp_path, monkeypatch, accelerator_limit=8, num_nodes=2)
    tasks = _tasks(spec)
    for name in TRAIN_LLM:
        assert tasks[name]["inputs"]["parameters"]["num_nodes"]["runtimeValue"]["constant"] == 2
        assert "accelerator" not in spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"].get(
            "resources", {}
        )
        assert f"exec-{name}" not in k8s  # no GPU node selector: the pod only waits for the TrainJob
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == load_params()["pipeline"]["train_retries"]


# ------------------------------------------------------------------ cluster readiness: sizes, root, cache, pods
def _executor_step(name: str, nodes: int = 1) -> str:
    """The pipeline.resources entry of a compiled task (exec-<task>)."""
    step = name.removeprefix("exec-").replace("-", "_")
    step = "train_llm" if step in ("train_lora", "train_reclora") else step
    return "waiter" if step == "train_llm" and nodes > 1 else step


def test_every_step_requests_and_limits_cpu_and_memory_from_params(tmp_path):
    spec, _, _ = _compile(tmp_path, "cluster")
    res = load_params()["pipeline"]["resources"]
    execs = spec["deploymentSpec"]["executors"]
    assert {k.removeprefix("exec-") for k in execs} == STAGES
    for name, e in execs.items():
        r = e["container"].get("resources", {})
        want = res[_executor_step(name)]
        got = {
            "cpu_request": r.get("resourceCpuRequest"),
            "cpu_limit": r.get("resourceCpuLimit"),
            "memory_request": r.get("resourceMemoryRequest"),
            "memory_limit": r.get("resourceMemoryLimit"),
        }
        assert got == {k: str(v) for k, v in want.items()}, name
    # GPU steps keep their accelerators next to CPU and memory
    assert execs["exec-train-lora"]["container"]["resources"]["accelerator"]["resourceCount"] == "1"


def test_a_per_step_override_and_the_waiter_reach_the_ir(tmp_path, monkeypatch):
    from reclora.config import deep_merge

    p = deep_merge(
        load_params(),
        {
            "pipeline": {
                "gpu": {"num_nodes": 2},
                "resources": {
                    "train_crm": {
                        "cpu_request": "12",
                        "cpu_limit": "16",
                        "memory_request": "60Gi",
                        "memory_limit": "64Gi",
                    }
                },
            }
        },
    )
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    monkeypatch.setenv("RECLORA_PARAMS", str(f))
    spec, _, _ = _compile(tmp_path)
    execs = spec["deploymentSpec"]["executors"]
    crm = execs["exec-train-crm"]["container"]["resources"]
    assert (crm["resourceCpuLimit"], crm["resourceMemoryRequest"]) == ("16", "60Gi")
    waiter = p["pipeline"]["resources"]["waiter"]
    for name in TRAIN_LLM:  # a multi-node step only waits for its TrainJob: the waiter's size, no GPU
        r = execs[f"exec-{name}"]["container"]["resources"]
        assert r["resourceCpuLimit"] == str(waiter["cpu_limit"]) and "accelerator" not in r


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"cpu_request": "8", "cpu_limit": "4", "memory_request": "1Gi", "memory_limit": "2Gi"}, "above cpu_limit"),
        ({"cpu_request": "1", "cpu_limit": "2", "memory_request": "4GB", "memory_limit": "8Gi"}, "memory"),
        # a params file is merged over the packaged defaults, so a key cannot go missing; a misspelt one is refused
        (
            {
                "cpu_request": "1",
                "cpu_limit": "2",
                "memory_request": "1Gi",
                "memory_limit": "2Gi",
                "memory_limt": "3Gi",
            },
            "unknown",
        ),
    ],
)
def test_bad_step_sizes_are_config_errors(bad, match, tmp_path, monkeypatch):
    from reclora.config import deep_merge
    from reclora.errors import ConfigError

    p = load_params()
    p["pipeline"]["resources"]["validate"] = bad
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(deep_merge(p, {})))
    monkeypatch.setenv("RECLORA_PARAMS", str(f))
    with pytest.raises(ConfigError, match=match):
        _compile(tmp_path)


def test_cluster_profile_sets_the_pipeline_root_and_local_compiles_leave_it_to_kfp(tmp_path, ir):
    from reclora.config import load_params_with

    spec, _, _ = _compile(tmp_path, "cluster")
    root = load_params_with(None, "cluster")["pipeline"]["pipeline_root"]
    assert root.startswith("s3://") and spec["defaultPipelineRoot"] == root
    assert "defaultPipelineRoot" not in ir[0]  # runs/pipeline is a local path: kfp.local's, not the IR's


def test_prepare_is_keyed_on_the_sources_fingerprint_which_is_never_cached(tmp_path):
    spec, _, _ = _compile(tmp_path, "cluster")
    root = spec["root"]["dag"]["tasks"]
    src = root["source-version"]
    assert not src["cachingOptions"].get("enableCache", False)
    assert src["inputs"]["parameters"]["source_path"] == {"componentInputParameter": "source_path"}
    assert src["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    prep = root["prepare"]
    assert prep["cachingOptions"]["enableCache"] is True
    assert prep["inputs"]["parameters"]["source_fingerprint"] == {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "source-version"}
    }


def _pod_of(name: str, executor: dict, k8s: dict) -> dict:
    """The Pod the KFP driver builds for one executor: image, command, CPU/memory/GPU, Secret env, node pool."""
    c = executor["container"]
    r = c.get("resources", {})
    req = {"cpu": r["resourceCpuRequest"], "memory": r["resourceMemoryRequest"]}
    lim = {"cpu": r["resourceCpuLimit"], "memory": r["resourceMemoryLimit"]}
    if "accelerator" in r:
        req[r["accelerator"]["resourceType"]] = lim[r["accelerator"]["resourceType"]] = r["accelerator"][
            "resourceCount"
        ]
    plat = k8s.get(name, {})
    env = [
        {
            "name": e["envVar"],
            "valueFrom": {
                "secretKeyRef": {"name": s["secretName"], "key": e["secretKey"], "optional": s.get("optional", False)}
            },
        }
        for s in plat.get("secretAsEnv", [])
        for e in s["keyToEnv"]
    ]
    spec = {
        "containers": [
            {
                "name": "main",
                "image": c["image"],
                "command": c["command"],
                "args": c.get("args", []),
                "env": env,
                "resources": {"requests": req, "limits": lim},
            }
        ],
        "restartPolicy": "Never",
    }
    if plat.get("nodeSelector"):
        spec["nodeSelector"] = plat["nodeSelector"]["labels"]
    if plat.get("tolerations"):
        spec["tolerations"] = plat["tolerations"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name.removeprefix("exec-")}, "spec": spec}


def test_the_irs_kubernetes_settings_make_valid_pods(tmp_path):
    import k8s_schemas as ks

    spec, k8s, _ = _compile(tmp_path, "cluster")
    pods = [_pod_of(n, e, k8s) for n, e in spec["deploymentSpec"]["executors"].items()]
    assert len(pods) == len(STAGES)
    from kubernetes.utils import parse_quantity

    for pod in pods:
        ks.assert_valid(pod, "pod of the compiled IR")
        for side in pod["spec"]["containers"][0]["resources"].values():  # quantities as the API server parses them
            assert all(parse_quantity(v) > 0 for v in side.values()), pod["metadata"]["name"]
    broken = _pod_of("exec-train-lora", spec["deploymentSpec"]["executors"]["exec-train-lora"], k8s)
    broken["spec"]["tolerations"][0]["tolerationSeconds"] = "soon"
    broken["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["optionl"] = True
    errs = ks.errors(broken)
    assert any("tolerationSeconds" in e for e in errs) or any("optionl" in e for e in errs), errs
