"""The fidelity sheet on the tiny model: one grid per shape, every tile captioned, figures against the
eager reference, cached steps counted, and a variant the device cannot run listed rather than fatal."""

import json

from PIL import Image

from kontext_bench import fidelity_sheet


def test_the_sheet_shows_each_variant_against_the_reference(tmp_path):
    fidelity_sheet.main(["--source", "embedded-tiny", "--device", "cpu", "--shapes", "edit256", "--steps", "6",
                         "--variants", "fbcache_always_hit,fp8", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "fidelity.json").read_text())
    rows = report["shapes"]["edit256"]
    assert [r["variant"] for r in rows] == ["baseline", "fbcache_always_hit"] * len(fidelity_sheet.EDITS)
    cached = [r for r in rows if r["variant"] == "fbcache_always_hit"]
    assert all(r["steps_computed"] < r["steps"] for r in cached)  # the cache skipped steps ...
    assert all(0 < r["rel_l2"] and r["psnr_db"] < 100 for r in cached)  # ... and the sheet shows the price
    assert "fp8" in report["skipped"] and "cpu" in report["skipped"]["fp8"]
    grid = Image.open(tmp_path / "fidelity_edit256.png")
    columns = 3  # the input, the reference, the cached variant
    assert grid.size == (columns * fidelity_sheet.TILE,
                         len(fidelity_sheet.EDITS) * (fidelity_sheet.TILE + fidelity_sheet.CAPTION))
