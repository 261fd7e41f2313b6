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
    want_hist = None if inst["history"] is None else [(h["item_id"], float(h["rating"]), h["timestamp"]) for h in inst["history"]]
    assert got["history"] == want_hist


def test_the_tests_bound_is_the_servers():
    assert MAX_TIMESTAMP == SERVER_MAX_TIMESTAMP


def test_the_handed_case_user_id_beyond_64_bits_is_a_400(parser):
    with pytest.raises(InvalidInput, match=r"instances\[0\]\.user_id must be an integer within the 64-bit range, got 18446744073709551615"):
        parser.parse_instances([{"user_id": 18446744073709551615, "candidates": [1]}])


@PROPS
@given(
    datatype=st.sampled_from(["INT64", "INT32", "FP32", "BYTES", "BOOL"]),
    data=st.lists(HOSTILE, min_size=1, max_size=3),
    which=st.sampled_from(["user_id", "candidates"]),
)
def test_v2_data_fits_its_datatype_or_is_a_400(parser, datatype, data, which):
    n = len(data)
    inputs = {"user_id": InferInput("user_id", [n], "INT64", list(range(1, n + 1))),
              "candidates": InferInput("candidates", [n, 1], "INT64", [1] * n)}  # fmt: skip
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
