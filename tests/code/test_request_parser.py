"""The serving request parser (V1 instances, V2 tensors) under hostile values in every field (issue 10).

The parser of the real predictor, without a model: every request either parses to exactly the values
sent or is refused with kserve's InvalidInput (HTTP 400) naming the field, never another exception
(a 500). The same property is checked over HTTP against a served version in
tests/integration/test_serving.py.
"""

from __future__ import annotations

import pytest
from helpers import FIELDS, HOSTILE, INT64, MAX_TIMESTAMP, NAMED, hostile_instance, is_int, valid_field
from hypothesis import given, settings
from hypothesis import strategies as st
from kserve import InferInput, InferRequest
from kserve.errors import InvalidInput

from reclora.serving import RecLoRAPredictor
from reclora.serving.predictor import MAX_TIMESTAMP as SERVER_MAX_TIMESTAMP

ITEMS = {1, 2, 3, 5, 8, 13}
PROPS = settings(max_examples=150, deadline=None)


@pytest.fixture(scope="module")
def parser() -> RecLoRAPredictor:
    p = RecLoRAPredictor("unused-version-dir")  # the parser needs only the catalogue and the rating range
    p.item_set, p.rating_range = set(ITEMS), (1.0, 5.0)
    return p


@PROPS
@given(field=st.sampled_from(FIELDS), value=HOSTILE)
def test_v1_parses_exactly_or_names_the_field(parser, field, value):
    inst = hostile_instance(field, value)
    if not valid_field(field, value, ITEMS):
        with pytest.raises(InvalidInput) as err:
            parser.parse_instances([inst])
        assert NAMED[field] in str(err.value), (field, value, str(err.value))
        return
    (got,) = parser.parse_instances([inst])
    assert got["user_id"] == inst["user_id"] and got["candidates"] == inst["candidates"]
    assert got["timestamp"] == inst["timestamp"]
    want_hist = (
        None
        if inst["history"] is None
        else [(h["item_id"], float(h["rating"]), h["timestamp"]) for h in inst["history"]]
    )
    assert got["history"] == want_hist


def test_the_tests_bound_is_the_servers():
    assert MAX_TIMESTAMP == SERVER_MAX_TIMESTAMP


def test_the_handed_case_user_id_beyond_64_bits_is_a_400(parser):
    with pytest.raises(
        InvalidInput,
        match=r"instances\[0\]\.user_id must be an integer in \[-9223372036854775808, 9223372036854775807\], "
        r"got 18446744073709551615",
    ):
        parser.parse_instances([{"user_id": 18446744073709551615, "candidates": [1]}])


@PROPS
@given(
    datatype=st.sampled_from(["INT64", "INT32", "FP32", "BYTES", "BOOL"]),
    data=st.lists(HOSTILE, min_size=1, max_size=3),
    which=st.sampled_from(["user_id", "candidates"]),
)
def test_v2_data_fits_its_datatype_or_is_a_400(parser, datatype, data, which):
    n = len(data)
    inputs = {
        "user_id": InferInput("user_id", [n], "INT64", list(range(1, n + 1))),
        "candidates": InferInput("candidates", [n, 1], "INT64", [1] * n),
    }
    shape = [n] if which == "user_id" or datatype == "BYTES" else [n, 1]
    inputs[which] = InferInput(which, shape, datatype, data)
    req = InferRequest("reclora", list(inputs.values()))
    lo, hi = {"INT64": INT64, "INT32": (-(2**31), 2**31 - 1)}.get(datatype, (0, -1))
    flat = [x for v in data for x in (v if isinstance(v, list) else [v])]  # the protocol allows nested data
    rows = [isinstance(v, list) for v in data]
    regular = not any(rows) or all(rows) and len({len(v) for v in data}) == 1  # not ragged
    fits = datatype in ("INT64", "INT32") and regular and len(flat) == n and all(is_int(v, lo, hi) for v in flat)
    if which == "candidates":
        fits = fits and all(v in ITEMS for v in flat)
    try:
        instances, k = parser.parse_v2(req)
        parsed = parser.parse_instances(instances)
    except InvalidInput as e:
        assert not fits, (datatype, data, str(e))
        assert which in str(e) or "candidates" in str(e) or "V2" in str(e), str(e)
        return
    assert fits or which == "candidates" and datatype == "BYTES", (datatype, data)
    if which == "user_id":
        assert [p["user_id"] for p in parsed] == flat  # exactly the ids sent, none truncated or wrapped
    elif datatype != "BYTES":
        assert [p["candidates"] for p in parsed] == [[v] for v in flat] and k == 1


# ------------------------------------------------------------------ issue 24: nothing ambiguous is guessed
KNOWN = {"instance": ("user_id", "candidates", "history", "timestamp"), "history": ("item_id", "rating", "timestamp")}


@PROPS
@given(
    where=st.sampled_from(["instance", "history"]),
    key=st.one_of(
        st.sampled_from(
            [
                "History",
                "Candidates",
                "user-id",
                "USER_ID",
                "candidate",
                "item",
                " rating",
                "Rating",
                "timestamp ",
                "ts",
                "",
            ]
        ),
        st.text(max_size=6),
    ),
)
def test_an_unknown_v1_field_is_a_400_naming_it(parser, where, key):
    inst = hostile_instance("user_id", 7)
    target = inst if where == "instance" else inst["history"][0]
    if key in target or key in KNOWN[where]:
        return  # a known field: the valid request parses (tested above)
    target[key] = target.get(key.strip().lower(), 1)
    with pytest.raises(InvalidInput) as err:
        parser.parse_instances([inst])
    msg = str(err.value)
    assert (
        f"{'instances[0]' if where == 'instance' else 'instances[0].history[0]'} has an unknown field {key!r}" in msg
    ), msg


def test_the_handed_case_history_with_a_capital_h_is_a_400(parser):
    """v1_history_typo.json: `History` was ignored and the user scored as a cold start."""
    body = {
        "instances": [
            {"user_id": 990001, "candidates": [1, 2], "History": [{"item_id": 3, "rating": 5, "timestamp": 900000000}]}
        ]
    }
    with pytest.raises(
        InvalidInput, match=r"instances\[0\] has an unknown field 'History' \(did you mean 'history'\?\)"
    ):
        parser.parse_instances(body["instances"])
    inst = dict(body["instances"][0])
    inst["history"] = inst.pop("History")  # spelt right, the same history is read
    ok = parser.parse_instances([inst])
    assert ok[0]["history"] == [(3, 5.0, 900000000)]


@pytest.mark.parametrize(
    "body,words",
    [
        (
            {"instances": [{"user_id": 1, "candidates": [1]}], "Instances": []},
            "the V1 body has an unknown field 'Instances'",
        ),
        (b'{"instances": [{"user_id": 1, "candidates": [1], "user_id": 2}]}', "repeats the key 'user_id'"),
        ('{"instances": [], "instances": [{"user_id": 1, "candidates": [1]}]}', "repeats the key 'instances'"),
    ],
)
def test_v1_bodies_with_unknown_or_repeated_keys_are_400s(parser, body, words):
    import asyncio

    with pytest.raises(InvalidInput) as err:
        asyncio.run(parser.predict(body))
    assert words in str(err.value), str(err.value)


def _v2(*inputs) -> InferRequest:
    return InferRequest("reclora", [InferInput(n, s, d, v) for n, s, d, v in inputs])


def test_a_repeated_v2_input_is_a_400_naming_it(parser):
    for name in ("user_id", "candidates", "history"):
        inputs = [
            ("user_id", [1], "INT64", [1]),
            ("candidates", [1, 1], "INT64", [1]),
            ("history", [1], "BYTES", ["[]"]),
        ]
        inputs += [i for i in inputs if i[0] == name]  # the same name again: which one is meant?
        with pytest.raises(InvalidInput, match=f"V2 input '{name}' is given 2 times"):
            parser.parse_v2(_v2(*inputs))


@PROPS
@given(
    n_users=st.integers(1, 4),
    n_cands=st.integers(1, 4),
    n_hist=st.one_of(st.none(), st.integers(1, 4)),
    ragged=st.booleans(),
)
def test_v2_inputs_whose_row_counts_disagree_are_a_400(parser, n_users, n_cands, n_hist, ragged):
    """One row per user in every input, or a 400: never a user zipped away (the mutant that dropped this check)."""
    inputs = [("user_id", [n_users], "INT64", list(range(1, n_users + 1)))]
    inputs.append(
        ("candidates", [n_cands], "BYTES", ["[1, 2]"] * n_cands)
        if ragged
        else ("candidates", [n_cands, 1], "INT64", [1] * n_cands)
    )
    if n_hist is not None:
        inputs.append(("history", [n_hist], "BYTES", ["[]"] * n_hist))
    agree = n_cands == n_users and n_hist in (None, n_users)
    if agree:
        instances, _ = parser.parse_v2(_v2(*inputs))
        assert [i["user_id"] for i in instances] == list(range(1, n_users + 1))
        return
    with pytest.raises(InvalidInput) as err:
        parser.parse_v2(_v2(*inputs))
    msg = str(err.value)
    bad = "candidates" if n_cands != n_users else "history"
    assert bad in msg and str(n_users) in msg, msg


@pytest.mark.parametrize("which", ["user_id", "candidates"])
@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**40])
def test_an_int32_bound_error_names_the_input(parser, which, value):
    """The mutant whose INT32 error no longer named the field survived the fast suite: here it cannot."""
    inputs = {"user_id": ("user_id", [1], "INT64", [1]), "candidates": ("candidates", [1, 1], "INT64", [1])}
    shape = [1] if which == "user_id" else [1, 1]
    inputs[which] = (which, shape, "INT32", [value])
    with pytest.raises(InvalidInput) as err:
        parser.parse_v2(_v2(*inputs.values()))
    msg = str(err.value)
    assert f"input {which!r} is INT32: each value must be an integer in [-2147483648, 2147483647], got {value}" in msg


def test_a_v2_bytes_cell_that_repeats_a_key_is_a_400(parser):
    req = _v2(
        ("user_id", [1], "INT64", [1]),
        ("candidates", [1, 1], "INT64", [1]),
        ("history", [1], "BYTES", ['[{"item_id": 2, "rating": 4, "item_id": 3}]']),
    )
    with pytest.raises(InvalidInput, match=r"input 'history'\[0\] is not valid JSON: repeats the key 'item_id'"):
        parser.parse_v2(req)


@settings(max_examples=100, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.integers() | st.text(max_size=3),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=2), c, max_size=3),
        max_leaves=8,
    ),
    dup=st.booleans(),
)
def test_loads_json_refuses_exactly_the_repeated_keys(doc, dup):
    import json

    from reclora.io import DuplicateKeyError, loads_json

    text = json.dumps({"k": doc})
    if dup:  # the same key twice in the outer object
        text = text[:-1] + ', "k": 0}'
        with pytest.raises(DuplicateKeyError, match="repeats the key 'k'"):
            loads_json(text)
    else:
        assert loads_json(text) == json.loads(text)


# ------------------------------------------------------------------ issue 24: one bound message for V1 and V2
@pytest.mark.parametrize("value", [2**64 - 1, 2**63, -(2**63) - 1, 1.5, "7", True])
@pytest.mark.parametrize(
    "where,named",
    [
        ("v1 user_id", "instances[0].user_id"),
        ("v1 candidates", "instances[0].candidates: an item id"),
        ("v1 history item_id", "instances[0].history[0]: an item id"),
        ("v2 user_id", "input 'user_id' is INT64: each value"),
        ("v2 candidates", "input 'candidates' is INT64: each value"),
    ],
)
def test_v1_and_v2_state_the_same_64_bit_bounds(parser, where, named, value):
    """2**64 - 1 fits an unsigned 64-bit integer: "within the 64-bit range" did not say which; every
    id field of both protocols states the bounds, in the same words."""
    inst = {"user_id": 1, "candidates": [1], "history": [{"item_id": 2, "rating": 4}]}
    v2 = {"user_id": ("user_id", [1], "INT64", [1]), "candidates": ("candidates", [1, 1], "INT64", [1])}
    if where == "v1 user_id":
        inst["user_id"] = value
    elif where == "v1 candidates":
        inst["candidates"] = [value]
    elif where == "v1 history item_id":
        inst["history"][0]["item_id"] = value
    else:
        name = where.split()[1]
        v2[name] = (name, v2[name][1], "INT64", [value])
    with pytest.raises(InvalidInput) as err:
        if where.startswith("v1"):
            parser.parse_instances([inst])
        else:
            parser.parse_instances(parser.parse_v2(_v2(*v2.values()))[0])
    want = f"{named} must be an integer in [-9223372036854775808, 9223372036854775807], got {value!r}"
    assert want in str(err.value), str(err.value)


# ------------------------------------------------------------------ issue 24: only the protocol's V2 keys
V2_KNOWN = {
    "request": ("id", "parameters", "inputs", "outputs"),
    "input": ("name", "shape", "datatype", "parameters", "data"),
    "output": ("name", "parameters"),
}


def _v2_body() -> dict:
    return {
        "id": "r1",
        "parameters": {"anything": {"goes": 1}},  # free-form: its keys are the client's
        "inputs": [
            {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1], "parameters": {}},
            {"name": "candidates", "shape": [1, 1], "datatype": "INT64", "data": [1]},
        ],
        "outputs": [{"name": "cold_start", "parameters": {"binary_data": False}}],
    }


@PROPS
@given(
    where=st.sampled_from(["request", "input", "output"]),
    key=st.one_of(
        st.sampled_from(
            ["Inputs", "instances", "Data", "Shape", "Parameters", "NAME", "data ", "dtype", "binary_data"]
        ),
        st.text(max_size=6),
    ),
)
def test_an_unknown_v2_key_at_any_level_is_a_400_naming_it(where, key):
    from reclora.serving.requests import check_v2_fields

    body = _v2_body()
    check_v2_fields(body)  # every key the protocol defines, at every level: accepted
    target = {"request": body, "input": body["inputs"][1], "output": body["outputs"][0]}[where]
    if key in V2_KNOWN[where]:
        return
    target[key] = [1]
    with pytest.raises(InvalidInput) as err:
        check_v2_fields(body)
    msg = str(err.value)
    at = {"request": "the V2 request", "input": "inputs[1] ('candidates')", "output": "outputs[0] ('cold_start')"}
    assert f"{at[where]} has an unknown field {key!r}" in msg, msg
    near = key.strip().lower()
    if near in V2_KNOWN[where]:
        assert f"(did you mean {near!r}?)" in msg, msg


@pytest.mark.parametrize(
    "body,words",
    [
        ([], "the V2 request must be a JSON object"),
        ({"id": "x"}, 'the V2 request lacks "inputs"'),
        ({"inputs": {"name": "user_id"}}, "the V2 request's 'inputs' must be a list of objects, got dict"),
        ({"inputs": ["user_id"]}, "inputs[0] must be an object"),
        ({"inputs": [], "outputs": "p_click"}, "the V2 request's 'outputs' must be a list of objects, got str"),
    ],
)
def test_a_v2_body_of_the_wrong_shape_is_a_400(body, words):
    from reclora.serving.requests import check_v2_fields

    with pytest.raises(InvalidInput) as err:
        check_v2_fields(body)
    assert words in str(err.value), str(err.value)
