"""The Great Expectations data gate on the prepared data.

    from reclora.validation import validate_prepared, ValidationResult
    result = validate_prepared(data_dir, report_dir, now=None, params=params.validation)

One GE suite per table (reclora.interactions, .items, .users, .samples), run
through GE checkpoints that build a Data Docs site at ``report_dir/index.html``;
``report_dir/summary.json`` holds the verdict, counts, stats and failures.
"""

from reclora.validation.gate import ValidationResult, validate_prepared

__all__ = ["ValidationResult", "validate_prepared"]
