"""Configuration: params.yaml (the single home of defaults) found, merged and typed.

* :mod:`reclora.config.loader`: find and read params files, merge an older file over the packaged defaults,
  apply a profile, overrides and the command line's ``--set`` items (``load_params``, ``load_params_with``).
* :mod:`reclora.config.schema`: :class:`Params`, the typed sections (:mod:`~reclora.config.data_sections`,
  :mod:`~reclora.config.model_sections`, :mod:`~reclora.config.pipeline_sections`), :func:`validated`,
  what the edges run once on the params they loaded, and :func:`as_params`, what the library runs on the params
  it is given (a mapping typed, a :class:`Params` as it is).
* :mod:`reclora.config.fields`: the machinery of a section (help text per field, strict reading, checks).

Nothing here imports torch.
"""

from reclora.config.loader import (
    PARAMS_ENV,
    RENAMED_SETS,
    cache_dir,
    cli_overrides,
    deep_merge,
    defaults_path,
    load_params,
    load_params_with,
    params_path,
    parse_overrides,
    section,
    set_cli_overrides,
)
from reclora.config.pipeline_sections import PromotionRules
from reclora.config.schema import Params, as_params, validated

__all__ = [
    "PARAMS_ENV",
    "RENAMED_SETS",
    "Params",
    "PromotionRules",
    "as_params",
    "cache_dir",
    "cli_overrides",
    "deep_merge",
    "defaults_path",
    "load_params",
    "load_params_with",
    "params_path",
    "parse_overrides",
    "section",
    "set_cli_overrides",
    "validated",
]
