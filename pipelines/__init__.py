"""The KFP pipeline: its DAG (pipeline.py) and how to run it locally, compile, submit and schedule (run.py)."""
