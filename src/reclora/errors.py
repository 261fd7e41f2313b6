"""Errors the CLI turns into one clear line and a non-zero exit code."""


class RecLoRAError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class DataError(RecLoRAError):
    """Input data is missing, unreadable or not in the expected format."""


class ValidationFailed(RecLoRAError):
    """Data failed the Great Expectations gate."""


class ConfigError(RecLoRAError, ValueError):
    """params.yaml or an option is invalid (also a ValueError: a bad value)."""
