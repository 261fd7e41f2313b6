"""`reclora bench scale` smoke test on a very small size (the benchmark itself is never run by the tests)."""

import json

from helpers import reclora

from reclora.data.synthetic import generate_ml25m_like


def test_bench_scale_cli_small(tmp_path):
    out = tmp_path / "scale.json"
    proc = reclora(
        "bench",
        "scale",
        "--events",
        "4000",
        "--out",
        str(out),
        "--stages",
        "prepare,features,retrieve,crm",
        "--crm-batches",
        "2",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    size = r["sizes"]["4000"]
    assert size["data"]["events"] > 1000 and size["data"]["users"] >= 20
    for stage in ("prepare", "features", "retrieve", "crm"):
        assert "error" not in size[stage], size[stage]
        assert size[stage]["seconds"] > 0 and 0.05 < size[stage]["peak_rss_gb"] < 10
    assert size["prepare"]["samples"] == size["retrieve"]["samples"]
    assert size["features"]["samples"] == sum(size["prepare"]["samples"].values())
    assert size["crm"]["batches"] == 2 and size["crm_samples_per_s"] > 0
    assert (tmp_path / "scale.png").stat().st_size > 1000
    assert not (tmp_path / "scale-work").exists()  # the data is removed after each size, then the scratch dir


def test_bench_scale_refuses_bad_sizes(tmp_path):
    proc = reclora("bench", "scale", "--events", "10,x", "--out", str(tmp_path / "s.json"))
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "--events" in proc.stderr
    proc = reclora("bench", "scale", "--events", "500", "--out", str(tmp_path / "s.json"))
    assert proc.returncode == 2 and ">= 1000" in proc.stderr


def test_ml25m_like_shape():
    t = generate_ml25m_like(1_000_000, seed=1)
    inter = t.interactions
    n_users, n_items = len(t.users), len(t.items)
    assert abs(n_users - 1_000_000 * 162_541 / 25_000_095) <= 1 and abs(n_items - 1_000_000 * 59_047 / 25_000_095) <= 1
    per_user = inter.groupby("user_id").size()
    # long-tailed (ML-25M: mean 155, median 71), capped at half the (here small) catalogue
    assert (
        per_user.min() >= 19 and per_user.mean() > 1.3 * per_user.median() and per_user.max() > 2.5 * per_user.median()
    )
    assert 120 <= len(inter) / n_users <= 170
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert set(inter["rating"].unique()) <= {x / 2 for x in range(1, 11)}
    assert 0.3 < (inter["rating"] >= 3.5).mean() < 0.7
    pop = inter.groupby("item_id").size().sort_values(ascending=False)
    assert pop.iloc[: len(pop) // 10].sum() > 0.2 * len(inter)  # the top 10% of items hold a large share


def test_embed_stage_embeds_every_item_uncached(tmp_path, tiny_llama_dir):
    import pandas as pd

    from reclora.bench.scale import _stage
    from reclora.config import load_params

    (tmp_path / "prepared").mkdir()
    pd.DataFrame(
        {"item_id": range(37), "title": [f"Movie {i} ({1990 + i})" for i in range(37)], "genres": ["Drama|Comedy"] * 37}
    ).to_parquet(tmp_path / "prepared" / "items.parquet")
    params = load_params()
    params["retrieval"]["embedding_model"] = str(tiny_llama_dir)
    r = _stage("embed", tmp_path, params, {})
    assert r["items"] == 37 and r["dim"] > 0 and r["items_per_s"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]  # the uncached run leaves no cache behind


def test_bench_scale_repeats_keeps_every_run(tmp_path):
    out = tmp_path / "scale.json"
    proc = reclora(
        "bench",
        "scale",
        "--events",
        "3000,6000",
        "--out",
        str(out),
        "--stages",
        "prepare,retrieve",
        "--repeats",
        "2",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if " events] " in ln]
    assert [ln.split("]")[0] + ln[ln.index("(run") : ln.index(")") + 1] for ln in lines] == [
        f"[{n} events(run {r}/2)" for r in (1, 2) for n in (3000, 6000) for _ in ("prepare", "retrieve")
    ]  # round robin: both sizes, then both again
    r = json.loads(out.read_text())
    assert r["repeats"] == 2
    for n in ("3000", "6000"):
        for stage in ("prepare", "retrieve"):
            e = r["sizes"][n][stage]
            runs = e["seconds_runs"]
            assert len(runs) == 2 and min(runs) <= e["seconds"] <= max(runs)
            assert e["peak_rss_gb"] == max(e["peak_rss_gb_runs"])
    t = r["ratios"]["time"]["6000/3000"]
    assert t["events"] > 1.5
    assert t["prepare"] == round(r["sizes"]["6000"]["prepare"]["seconds"] / r["sizes"]["3000"]["prepare"]["seconds"], 2)
    proc = reclora("bench", "scale", "--events", "3000", "--out", str(out), "--repeats", "0")
    assert proc.returncode == 2 and "--repeats" in proc.stderr
