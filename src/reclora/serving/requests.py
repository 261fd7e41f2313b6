"""The serving request parser: a V1 body or a V2 InferRequest -> validated instances, or kserve's InvalidInput.

    instances = v1_instances(payload)                          # the V1 body's "instances" (JSON text or a dict)
    check_v2_fields(body)                                      # the V2 JSON's keys, at every level (the server)
    instances, k = parse_v2(request)                           # V2 tensors as V1-style instances, output width k
    outputs = v2_outputs(request)                              # the V2 outputs asked for (None: all)
    parsed = parse_instances(instances, items, rating_range)   # [{"user_id", "candidates", "history", "timestamp"}]

Bad input raises kserve's InvalidInput, which the server turns into HTTP 400 naming the field:
unknown item ids, too many/empty/duplicate candidates, wrong types, ids outside the 64-bit range
(:func:`int_out_of_range`: one message for V1 and V2, with the bounds), timestamps outside [0, 253402300799] (unix seconds up to 9999-12-31), history ratings outside the
data set's rating range, V2 data that does not fit its declared datatype (1.5 or 2**40 in an INT32/INT64
input). Nothing is guessed: an unknown or misspelt field (``History``), a V2 input name given twice, V2
inputs whose row counts disagree and a JSON object that repeats a key are 400s naming the field. A V2
request holds only the Open Inference Protocol's keys at every level (:func:`check_v2_fields`), and asks
only for outputs the model has, each once (:func:`v2_outputs`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from difflib import get_close_matches
from typing import Any

import numpy as np
from kserve import InferRequest
from kserve.errors import InvalidInput

from reclora.data.loaders import INT64_MAX, INT64_MIN
from reclora.io import loads_json

INT_RANGES = {"INT64": (INT64_MIN, INT64_MAX), "INT32": (-(2**31), 2**31 - 1)}
MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z: the last second a datetime can show
V1_BODY_FIELDS = ("instances",)
INSTANCE_FIELDS = ("user_id", "candidates", "history", "timestamp")
HISTORY_FIELDS = ("item_id", "rating", "timestamp")
V2_INPUTS = ("user_id", "candidates", "history")
V2_OUTPUTS = ("p_click", "cold_start")
# the keys of an Open Inference Protocol (V2) inference request, at each level ("parameters" is free-form)
V2_REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
V2_INPUT_FIELDS = ("name", "shape", "datatype", "parameters", "data")
V2_OUTPUT_FIELDS = ("name", "parameters")


def refuse_unknown_fields(
    obj: Mapping[str, Any], known: Sequence[str], where: str, hints: Mapping[str, str] | None = None
) -> None:
    """InvalidInput naming the first key of ``obj`` that is not one of ``known`` (and the known one it
    resembles, e.g. ``History`` -> ``history``, or the hint ``hints`` gives for it): an unknown field is
    never ignored."""
    for key in obj:
        if key not in known:
            near = next((k for k in known if str(key).strip().lower().replace("-", "_") == k), None)
            hint = f" (did you mean {near!r}?)" if near else f" ({hints[key]})" if hints and key in hints else ""
            raise InvalidInput(f"{where} has an unknown field {str(key)!r}{hint}; the fields are {', '.join(known)}")


def is_int(v: Any, lo: int = INT64_MIN, hi: int = INT64_MAX) -> bool:
    """An integer (not a bool) within [lo, hi] (default: the 64-bit range)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and lo <= int(v) <= hi


def int_out_of_range(what: str, v: Any, lo: int = INT64_MIN, hi: int = INT64_MAX) -> InvalidInput:
    """The InvalidInput for ``v`` (named by ``what``) that is not an integer within [lo, hi] (default:
    INT64's bounds): one message, with the bounds written out, for V1 fields and V2 inputs alike."""
    return InvalidInput(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")


def _flat(data: Any) -> list[Any]:
    if isinstance(data, (list, tuple)):
        return [x for d in data for x in _flat(d)]
    return [data]


def is_num(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return (
        isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, (bool, np.bool_))
        and math.isfinite(v)
    )


def check_timestamp(v: Any, what: str) -> int:
    """``v`` as int unix seconds in [0, MAX_TIMESTAMP]; else InvalidInput naming ``what``."""
    if not is_int(v, 0, MAX_TIMESTAMP):
        raise InvalidInput(f"{what} must be an integer of unix seconds in [0, {MAX_TIMESTAMP}], got {v!r}")
    return int(v)


def check_item(v: Any, items: Collection[int], what: str) -> int:
    """``v`` as an int item id of the catalogue ``items``; else InvalidInput naming ``what``."""
    if not is_int(v):
        raise int_out_of_range(f"{what}: an item id", v)
    if int(v) not in items:
        raise InvalidInput(f"{what}: unknown item id {int(v)}")
    return int(v)


def parse_history(
    h: Any, where: str, items: Collection[int], rating_range: tuple[float, float] | None
) -> list[tuple[int, float, int]] | None:
    """An instance's inline history as [(item_id, rating, timestamp)] (None when not given); a timestamp
    defaults to the entry's position; ratings within ``rating_range`` when one is known."""
    if h is None:
        return None
    if not isinstance(h, list):
        raise InvalidInput(f"{where}.history must be a list of {{item_id, rating, timestamp}} objects")
    out = []
    for j, e in enumerate(h):
        w = f"{where}.history[{j}]"
        if not isinstance(e, Mapping):
            raise InvalidInput(f"{w} must be an object with item_id and rating")
        refuse_unknown_fields(e, HISTORY_FIELDS, w)
        iid = check_item(e.get("item_id"), items, w)
        r = e.get("rating")
        if not is_num(r):
            raise InvalidInput(f"{w}.rating must be a finite number, got {r!r}")
        if rating_range and not rating_range[0] <= r <= rating_range[1]:
            lo, hi = (f"{x:g}" for x in rating_range)
            raise InvalidInput(f"{w}.rating must be within [{lo}, {hi}] (the data set's rating range), got {r!r}")
        ts = check_timestamp(e.get("timestamp", j), f"{w}.timestamp")
        out.append((iid, float(r), ts))
    return out


def parse_instances(
    instances: Any,
    items: Collection[int],
    rating_range: tuple[float, float] | None,
    max_instances: int,
    max_candidates: int,
) -> list[dict[str, Any]]:
    """Validate V1 instances into [{"user_id", "candidates", "history" (or None), "timestamp" (or None)}]:
    at most ``max_instances`` instances of at most ``max_candidates`` distinct catalogue items (``items``)."""
    if not isinstance(instances, list) or not instances:
        raise InvalidInput('"instances" must be a non-empty list')
    if len(instances) > max_instances:
        raise InvalidInput(f"too many instances: {len(instances)} > {max_instances}")
    out = []
    for i, inst in enumerate(instances):
        w = f"instances[{i}]"
        if not isinstance(inst, Mapping):
            raise InvalidInput(f"{w} must be an object with user_id and candidates")
        refuse_unknown_fields(inst, INSTANCE_FIELDS, w)
        uid = inst.get("user_id")
        if not is_int(uid):
            raise int_out_of_range(f"{w}.user_id", uid)
        cands = inst.get("candidates")
        if not isinstance(cands, list) or not cands:
            raise InvalidInput(f"{w}.candidates must be a non-empty list of item ids")
        if len(cands) > max_candidates:
            raise InvalidInput(f"{w}: too many candidates: {len(cands)} > {max_candidates}")
        cands = [check_item(c, items, f"{w}.candidates") for c in cands]
        if len(set(cands)) != len(cands):
            raise InvalidInput(f"{w}.candidates has duplicate item ids")
        ts = inst.get("timestamp")
        if ts is not None:
            ts = check_timestamp(ts, f"{w}.timestamp")
        history = parse_history(inst.get("history"), w, items, rating_range)
        out.append({"user_id": int(uid), "candidates": cands, "history": history, "timestamp": ts})
    return out


def v1_instances(payload: Any) -> Any:
    """The ``instances`` of a V1 body: a dict, or its JSON text (a client that did not say application/json);
    InvalidInput for a body that is not JSON, not an object with "instances", or has another field."""
    if isinstance(payload, (bytes, bytearray, str)):
        try:
            payload = loads_json(payload)
        except ValueError as e:  # not JSON (or not UTF-8), or an object that repeats a key
            raise InvalidInput(f"V1 body is not valid JSON: {e}") from e
    if not isinstance(payload, Mapping) or "instances" not in payload:
        raise InvalidInput('V1 body must be a JSON object with "instances": [{"user_id", "candidates", ...}]')
    refuse_unknown_fields(payload, V1_BODY_FIELDS, "the V1 body")
    return payload["instances"]


def _json_cells(arr: np.ndarray, name: str) -> list[Any]:
    out = []
    for j, v in enumerate(arr.reshape(-1)):
        try:
            out.append(loads_json(v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)))
        except ValueError as e:  # not JSON (or not UTF-8), or an object that repeats a key
            raise InvalidInput(f"input {name!r}[{j}] is not valid JSON: {e}") from e
    return out


def _v2_ints(inp: Any) -> np.ndarray:
    """An INT64/INT32 input as int64; JSON data is checked element by element first, since numpy would
    truncate 1.5 to 1 and fail with an OverflowError on 2**64."""
    lo, hi = INT_RANGES[inp.datatype]
    if inp._raw_data is None:
        bad = [v for v in _flat(inp.data) if not is_int(v, lo, hi)][:1]
        if bad or not isinstance(inp.data, (list, tuple)):
            shown = bad[0] if bad else inp.data
            raise int_out_of_range(f"input {inp.name!r} is {inp.datatype}: each value", shown, lo, hi)
    return inp.as_numpy().astype(np.int64)


def parse_v2(req: InferRequest) -> tuple[list[dict[str, Any]], int]:
    """InferRequest -> V1-style instances (validated later by :func:`parse_instances`) and the output width k
    (the longest candidate list)."""
    names = [i.name for i in req.inputs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInput(f"V2 input {repeated[0]!r} is given {names.count(repeated[0])} times; each input once")
    by_name = {i.name: i for i in req.inputs}
    for need in ("user_id", "candidates"):
        if need not in by_name:
            raise InvalidInput(f"V2 request lacks input {need!r} (inputs: user_id INT64 [n], candidates INT64 [n, k])")
    unknown = set(by_name) - set(V2_INPUTS)
    if unknown:
        raise InvalidInput(f"unknown V2 inputs {sorted(unknown)}; expected {', '.join(V2_INPUTS)}")
    try:
        u_in, c_in = by_name["user_id"], by_name["candidates"]
        if u_in.datatype not in INT_RANGES:
            raise InvalidInput(f"user_id must be INT64, got {u_in.datatype}")
        users = _v2_ints(u_in).reshape(-1)
        n = len(users)
        if c_in.datatype in INT_RANGES:
            c = _v2_ints(c_in)
            if c.ndim != 2 or c.shape[0] != n:
                raise InvalidInput(f"candidates must have shape [n, k] with n = {n}, got {list(c.shape)}")
            cands = [[int(x) for x in row] for row in c]
        elif c_in.datatype == "BYTES":
            cands = _json_cells(c_in.as_numpy(), "candidates")
            if len(cands) != n:
                raise InvalidInput(f"candidates (BYTES) must hold one JSON list per user: {len(cands)} != {n}")
        else:
            raise InvalidInput(f"candidates must be INT64 [n, k] or BYTES [n] (JSON lists), got {c_in.datatype}")
        hist: list[Any] = [None] * n
        if "history" in by_name:
            h_in = by_name["history"]
            if h_in.datatype != "BYTES":
                raise InvalidInput(f"history must be BYTES [n] (JSON lists), got {h_in.datatype}")
            hist = _json_cells(h_in.as_numpy(), "history")
            if len(hist) != n:
                raise InvalidInput(f"history must hold one JSON list per user: {len(hist)} != {n}")
    except InvalidInput:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
        raise InvalidInput(f"malformed V2 request: {e}") from e
    rows = {"user_id": len(users), "candidates": len(cands), "history": len(hist)}
    if len(set(rows.values())) != 1:  # one row per user in every input: never zip a user away
        raise InvalidInput(f"V2 inputs disagree on the number of rows: {rows}")
    instances = [
        {"user_id": int(u), "candidates": c, **({"history": h} if h is not None else {})}
        for u, c, h in zip(users, cands, hist, strict=True)
    ]
    k = max((len(c) for c in cands if isinstance(c, list)), default=0)
    return instances, k


def check_v2_fields(body: Any) -> None:
    """Refuse a V2 (Open Inference Protocol) request body, the parsed JSON (a dict), that holds a key the
    protocol does not define, at any level: the request (``id``, ``parameters``, ``inputs``, ``outputs``),
    each input (``name``, ``shape``, ``datatype``, ``parameters``, ``data``) and each requested output
    (``name``, ``parameters``); ``parameters`` objects are free-form. kserve's request models ignore an
    unknown key, so ``"Inputs"`` beside ``"inputs"`` or ``"Data"`` beside ``"data"`` would pass unseen.
    Raises InvalidInput naming the key and where it is (and the key it resembles), or for a body that is
    not an object with an ``inputs`` list of objects (``outputs``, when given, a list of objects)."""
    if not isinstance(body, Mapping):
        raise InvalidInput('the V2 request must be a JSON object with "inputs": [{"name", "shape", ...}]')
    hints = {"instances": "'instances' is the V1 body: POST /v1/models/NAME:predict"}
    refuse_unknown_fields(body, V2_REQUEST_FIELDS, "the V2 request", hints)
    if "inputs" not in body:
        raise InvalidInput('the V2 request lacks "inputs"')
    for key, fields in (("inputs", V2_INPUT_FIELDS), ("outputs", V2_OUTPUT_FIELDS)):
        tensors = body.get(key)
        if tensors is None and key == "outputs":
            continue
        if not isinstance(tensors, list):
            raise InvalidInput(f"the V2 request's {key!r} must be a list of objects, got {type(tensors).__name__}")
        for j, t in enumerate(tensors):
            if not isinstance(t, Mapping):
                raise InvalidInput(f"{key}[{j}] must be an object with the fields {', '.join(fields)}")
            name = t.get("name")
            refuse_unknown_fields(t, fields, f"{key}[{j}]" + (f" ({name!r})" if isinstance(name, str) else ""))


def v2_outputs(req: InferRequest) -> list[str] | None:
    """The names of the outputs ``req`` asks for, in its order (None: it asks for none, so all of
    :data:`V2_OUTPUTS` are returned, as the protocol says). Raises InvalidInput for an output name the
    model does not have (naming it, a close match and the outputs there are) or one asked for twice."""
    if not req.request_outputs:
        return None
    names = [o.name for o in req.request_outputs]
    for name in names:
        if name not in V2_OUTPUTS:
            near = get_close_matches(str(name), V2_OUTPUTS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise InvalidInput(f"unknown V2 output {name!r}{hint}; the outputs are {', '.join(V2_OUTPUTS)}")
        if names.count(name) > 1:
            raise InvalidInput(f"V2 output {name!r} is asked for {names.count(name)} times; each output once")
    return names
