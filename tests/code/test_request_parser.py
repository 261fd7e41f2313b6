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
        match=r"instances\[0\]\.user_id must be an integer within the 64-bit range, got 18446744073709551615",
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
    assert f"input {which!r} is INT32 but holds {value}" in msg and "[-2147483648, 2147483647]" in msg, msg


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
