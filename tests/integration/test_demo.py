"""`reclora demo`: the main job runs the data stages and says what it did."""

from helpers import reclora


def test_demo_runs_data_stages_and_reports(tmp_path):
    proc = reclora("demo", "--out", str(tmp_path / "demo"), check=True)
    out = proc.stdout
    assert "prepared" in out and "synthetic interactions" in out
    assert "validated PASS" in out and str(tmp_path / "demo" / "validation" / "index.html") in out
    assert "version   data " in out and ".dir" in out
    assert (tmp_path / "demo" / "prepared" / "samples" / "train.parquet").is_file()
