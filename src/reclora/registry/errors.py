"""The registry's exceptions (a leaf module: every registry module and the Model Registry client raise them)."""

from __future__ import annotations

from reclora.errors import RecLoRAError


class RegistryError(RecLoRAError):
    """The registry cannot do what was asked (bad URI, unknown ref, conflicting state)."""


class VersionNotFound(RegistryError):
    """No visible version matches the reference."""


class NoChampion(RegistryError):
    """The registry has no champion yet."""


class NoPreviousChampion(RegistryError):
    """A rollback was asked for but there is no earlier champion to restore."""


class UnverifiedVersion(RegistryError):
    """A version whose manifest or files do not verify: it is never promoted, rolled back to, deployed or served."""


__all__ = ["NoChampion", "NoPreviousChampion", "RegistryError", "UnverifiedVersion", "VersionNotFound"]
