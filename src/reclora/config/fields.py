"""The machinery of the typed params sections: frozen dataclasses whose fields carry their help text, read
strictly from a params mapping and written back to one.

A section subclasses :class:`Section` as a frozen dataclass; every field is made with :func:`setting` and has
no default value (params.yaml is the single home of the values; a file written for an older version is merged
over the packaged defaults before it gets here, :func:`reclora.config.load_params`). :meth:`Section.from_dict`
refuses a key the section does not have (naming it and the known keys), a missing key, and a value whose type
is not the field's annotation (naming the key); nested sections recurse. ``__post_init__`` then checks the
values with :meth:`Section.require`, whose message names the full key: ``train.lr must be > 0, got -1``.
:meth:`Section.to_dict` gives back the plain mapping (lists for tuples), equal to the mapping read.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Union

from reclora.errors import ConfigError

HELP = "help"

# the key of the section being built (``pipeline.spark.driver``), for __post_init__'s messages
_WHERE: contextvars.ContextVar[str | None] = contextvars.ContextVar("reclora_config_where", default=None)


def setting(help: str, **kwargs: Any) -> Any:
    """A section field with its help text (``dataclasses.field(metadata={"help": help})``, as peft's configs)."""
    return dataclasses.field(metadata={HELP: help}, **kwargs)


def is_number(v: Any) -> bool:
    """An int or a float, not a bool (YAML's ``true`` is not a number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_finite(v: Any) -> bool:
    """A number that is neither NaN nor infinite."""
    return is_number(v) and math.isfinite(v)


def _describe(tp: Any) -> str:
    """What a value of annotation ``tp`` is, in words: "an integer", "a list of strings", ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "anything"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
        inner = args[0] if args else Any
        return f"a list ({_describe(inner)} each)"
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return f"a mapping (values: {_describe(args[1])})" if args else "a mapping"
    if isinstance(tp, type) and issubclass(tp, Section):
        return "a mapping (a section)"
    if tp is datetime.date:
        return "a date"
    return getattr(tp, "__name__", str(tp))


def _typed(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (lists become tuples where ``tp`` is a tuple; nested
    sections are built). Raises ConfigError naming ``key`` and the type wanted."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def wrong() -> ConfigError:
        return ConfigError(f"{key} must be {_describe(tp)}, got {value!r}")

    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return value
    if tp is float:
        if not is_number(value):
            raise wrong()
        return value
    if tp is str:
        if not isinstance(value, str):
            raise wrong()
        return value
    if tp is type(None):
        if value is not None:
            raise wrong()
        return None
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise wrong()
        return value
    if origin in (Union, types.UnionType):
        for a in args:
            try:
                return _typed(value, a, key)
            except ConfigError:
                continue
        raise wrong()
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise wrong()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise wrong()
            return tuple(_typed(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_typed(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise wrong()
        kt, vt = args if args else (Any, Any)
        return {_typed(k, kt, f"{key} (a key)"): _typed(v, vt, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Section):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise wrong()
        return tp.from_dict(value, key)
    if tp is datetime.date:  # YAML reads an unquoted 2024-01-01 as a date
        if not isinstance(value, datetime.date):
            raise wrong()
        return value
    raise TypeError(f"{key}: annotation {tp!r} is not supported by reclora.config.fields")


def _plain(value: Any) -> Any:
    """A section value as plain YAML-able data (sections -> dicts, tuples -> lists)."""
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of every typed params section (a frozen dataclass; see the module docstring).

    ``KEY``: the section's key in params.yaml (``"train"``, ``"pipeline.promotion"``), the prefix of its
    messages when it is built directly rather than through :meth:`from_dict`. ``RENAMED``: keys an older
    params file may still have, ``old key -> (new key, {old value: new value})``; the new key takes the
    translated value where it is absent or has ``RENAMED_KEEP`` (the value a merge over the packaged
    defaults gives it), and the old key is dropped.
    """

    KEY: ClassVar[str] = ""
    RENAMED: ClassVar[dict[str, tuple[str, dict[Any, Any]]]] = {}
    RENAMED_KEEP: ClassVar[dict[str, Any]] = {}

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """{field name: its help text}."""
        return {f.name: f.metadata.get(HELP, "") for f in dataclasses.fields(cls)}

    @classmethod
    def _renamed(cls, d: dict[str, Any], where: str) -> dict[str, Any]:
        for old, (new, values) in cls.RENAMED.items():
            if old not in d:
                continue
            v = d.pop(old)
            if not any(v == k and type(v) is type(k) for k in values):
                raise ConfigError(
                    f"{where}.{old} (the older form of {where}.{new}) must be one of "
                    f"{', '.join(str(k).lower() for k in values)}, got {v!r}"
                )
            if new not in d or d[new] == cls.RENAMED_KEEP.get(new, object()):
                d[new] = values[v]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str | None = None) -> Any:
        """The section from its params mapping ``d`` (at key ``where``, default :attr:`KEY`).

        Raises ConfigError for a mapping that is not one, an unknown key (naming it and the known keys), a
        missing key, a value of the wrong type, or a value ``__post_init__`` refuses; each names the key."""
        where = where if where is not None else cls.KEY
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where or 'params'} must be a mapping, got {d!r}")
        d = cls._renamed(dict(d), where)
        flds = [f for f in dataclasses.fields(cls) if f.init]
        names = [f.name for f in flds]
        unknown = [k for k in d if k not in names]
        prefix = f"{where}." if where else ""
        if unknown:
            raise ConfigError(f"{where or 'params'}: unknown key {prefix + unknown[0]!r} (known: {', '.join(names)})")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in flds:
            if f.name in d:
                kwargs[f.name] = _typed(d[f.name], hints[f.name], f"{prefix}{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{prefix}{f.name} is missing ({f.metadata.get(HELP, '')})")
        token = _WHERE.set(where)
        try:
            return cls(**kwargs)
        finally:
            _WHERE.reset(token)

    def to_dict(self) -> dict[str, Any]:
        """The section as the plain mapping params.yaml holds (``from_dict(s.to_dict()) == s``)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def key(self, name: str) -> str:
        """The full params key of field ``name`` (``train.lr``), for messages."""
        where = _WHERE.get()
        where = where if where is not None else self.KEY
        return f"{where}.{name}" if where else name

    def require(self, ok: bool, name: str, must: str) -> None:
        """Raise ConfigError ``<key> must <must>, got <value>`` unless ``ok``."""
        if not ok:
            raise ConfigError(f"{self.key(name)} must {must}, got {getattr(self, name)!r}")

    def at_least(self, lo: int | float, *names: str) -> None:
        """Each of ``names`` is a finite number >= ``lo``."""
        for n in names:
            v = getattr(self, n)
            self.require(is_finite(v) and v >= lo, n, f"be >= {lo}")

    def positive(self, *names: str) -> None:
        """Each of ``names`` is a finite number > 0."""
        for n in names:
            v = getattr(self, n)
            self.require(is_finite(v) and v > 0, n, "be > 0")

    def fraction(self, *names: str, closed: bool = False) -> None:
        """Each of ``names`` is in [0, 1) (``closed``: [0, 1])."""
        for n in names:
            v = getattr(self, n)
            ok = is_finite(v) and 0 <= v and (v <= 1 if closed else v < 1)
            self.require(ok, n, f"be in [0, 1{']' if closed else ')'}")
