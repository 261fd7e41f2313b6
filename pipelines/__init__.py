"""The KFP pipeline: its DAG (pipeline.py), the local run with kfp.local (local.py), compile, submit and
schedule on a KFP backend (remote.py), the Docker/podman runner (containers.py), the timing benchmark (bench.py)."""
