"""Each raw format loads into the canonical tables with the right values."""

import numpy as np
import pandas as pd
import pytest
from helpers import small_tables, write_goodbooks, write_ml1m, write_ml25m, write_ml100k

from reclora.config import load_params
from reclora.data import load_dataset
from reclora.data.loaders import load_table
from reclora.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def src():
    return small_tables()


def _same_interactions(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = ["user_id", "item_id", "timestamp"]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    assert list(a.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert a.dtypes.astype(str).tolist() == ["int64", "int64", "float64", "int64"]
    pd.testing.assert_frame_equal(a, b[a.columns], check_dtype=False)


def test_ml100k(src, tmp_path):
    t = load_dataset("ml-100k", write_ml100k(src, tmp_path / "ml"), load_params())
    _same_interactions(t.interactions, src.interactions)
    assert len(t.items) == len(src.items) and len(t.users) == len(src.users)
    row = t.items.set_index("item_id").loc[1]
    assert row["title"] == "Amélie (2001)"  # latin-1 decoded
    # genre flags become the genre names, in u.genre order
    src_genres = set(src.items.set_index("item_id").loc[1, "genres"].split("|"))
    assert set(row["genres"].split("|")) == src_genres
    assert t.users.set_index("user_id").loc[1, "age"] == src.users.set_index("user_id").loc[1, "age"]


def test_ml1m(src, tmp_path):
    t = load_dataset("ml-1m", write_ml1m(src, tmp_path / "ml"), load_params())
    _same_interactions(t.interactions, src.interactions)
    assert t.items.set_index("item_id").loc[1, "title"] == "Amélie (2001)"
    assert t.users["occupation"].iloc[0] == "other" and t.users["occupation"].iloc[1] == "academic/educator"


def test_ml25m_half_stars(src, tmp_path):
    t = load_dataset("ml-25m", write_ml25m(src, tmp_path / "ml"), load_params())
    assert len(t.interactions) == len(src.interactions)
    assert (t.interactions["rating"] % 1 == 0.5).any()  # half stars survive
    assert set(t.users["user_id"]) == set(src.interactions["user_id"])  # users derived from ratings


def test_goodbooks_row_order_is_time(src, tmp_path):
    t = load_dataset("goodbooks-10k", write_goodbooks(src, tmp_path / "gb"), load_params())
    assert len(t.interactions) == len(src.interactions)
    assert np.array_equal(t.interactions["timestamp"].to_numpy(), np.arange(len(src.interactions)))
    assert (t.items["genres"] == "Jane Doe").all()


def test_generic_table_with_mapping_and_dates(tmp_path):
    d = tmp_path / "tab"
    d.mkdir()
    pd.DataFrame(
        {"uid": [1, 1, 2], "iid": [10, 11, 10], "stars": [5, 2, 4], "when": ["2024-01-01", "2024-01-02", "2024-01-03"]}
    ).to_csv(d / "events.csv", index=False)
    pd.DataFrame({"iid": [10, 11], "name": ["A", "B"]}).to_parquet(d / "catalog.parquet")
    spec = {
        "interactions": "events",
        "items": "catalog",
        "columns": {"user_id": "uid", "item_id": "iid", "rating": "stars", "timestamp": "when", "title": "name"},
    }
    t = load_table(d, spec)
    assert t.interactions["timestamp"].tolist() == [1704067200, 1704153600, 1704240000]
    assert t.items["title"].tolist() == ["A", "B"] and (t.items["genres"] == "").all()
    assert t.users["user_id"].tolist() == [1, 2]


def test_missing_file_is_a_clear_error(tmp_path):
    (tmp_path / "ml").mkdir()
    with pytest.raises(DataError, match="missing u.data"):
        load_dataset("ml-100k", tmp_path / "ml", load_params())
    with pytest.raises(DataError, match="not found"):
        load_dataset("ml-1m", tmp_path / "nope", load_params())
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_dataset("netflix", tmp_path, load_params())
    with pytest.raises(ConfigError, match="--path is required"):
        load_dataset("ml-100k", None, load_params())


def test_unparsable_values_name_the_file(src, tmp_path):
    d = write_ml100k(src, tmp_path / "ml")
    text = (d / "u.data").read_text().splitlines()
    text[3] = "1\t2\tfive\t881250949"
    (d / "u.data").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"u.data.*'rating'.*five"):
        load_dataset("ml-100k", d, load_params())


def test_wrong_field_count_names_the_line(src, tmp_path):
    d = write_ml1m(src, tmp_path / "ml")
    with open(d / "ratings.dat", "a") as f:
        f.write("1::2::3\n")
    with pytest.raises(DataError, match=r"ratings.dat: line \d+ has 3 fields, expected 4"):
        load_dataset("ml-1m", d, load_params())
