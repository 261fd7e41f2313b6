"""The pipeline's entry points under their former module: :mod:`pipelines.local` (``run_local``) and
:mod:`pipelines.remote` (``compile_pipeline``, ``submit``, ``schedule``). Import from those."""

from pipelines.local import run_local
from pipelines.remote import compile_pipeline, schedule, submit

__all__ = ["compile_pipeline", "run_local", "schedule", "submit"]
