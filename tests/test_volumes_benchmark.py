"""The bookkeeping of `benchmarks/volumes.py` (issue 15): window counts, the job plan, the
bfloat16 fallback jobs, the table, and the guarded whole-scan measurement."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import volumes as V  # noqa: E402


def test_windows_counts_follow_the_contract():
    # 240 with a 160 patch, step 80: starts 0, 80; 155 with 16, step 8: 0..136 and 139 -> 19.
    assert V.windows((240, 240, 155), (160, 160, 16), 0.5) == 2 * 2 * 19
    # No overlap: step 160 (starts 0, 80 -- the last window ends at the border) and 16 -> 10.
    assert V.windows((240, 240, 155), (160, 160, 16), 0.0) == 2 * 2 * 10
    assert V.windows((100, 64, 16), (160, 64, 16), 0.5) == 1  # smaller than or equal to it


def test_plan_quick_full_and_only():
    quick = V.plan(V.parse_args(["--quick"]))
    assert [key for key, _, _ in quick] == [
        "keras_channels_first_float32_b1", "keras_channels_first_auto_b1",
        "keras_channels_last_float32_b1", "keras_channels_last_auto_b1",
        "monai_unet_b1", "monai_basicunet_b1"]
    assert all(job["patch"] == [64, 64, 16] and job["steps"] == 2 for _, job, _ in quick)
    full = V.plan(V.parse_args(["--batch", "1", "2"]))
    assert len(full) == 13 and full[-1][0] == "scan"
    assert full[-1][1]["patch"] == [160, 160, 16] and full[-1][1]["scan"] == [240, 240, 155, 4]
    only = V.plan(V.parse_args(["--only", "monai", "--no-scan"]))
    assert [key for key, _, _ in only] == ["monai_unet_b1", "monai_basicunet_b1"]


def test_bfloat16_twins_only_where_auto_resolved_to_float32():
    jobs = V.plan(V.parse_args(["--quick"]))
    results = {"keras_channels_first_auto_b1": {"policy": "float32"},
               "keras_channels_last_auto_b1": {"policy": "mixed_bfloat16"}}
    twins = V.bf16_jobs(results, jobs)
    assert [(key, job["precision"]) for key, job, _ in twins] == [
        ("keras_channels_first_mixed_bfloat16_b1", "mixed_bfloat16")]


def test_markdown_rows_errors_and_scan():
    row = {"job": {"kind": "keras", "batch": 2, "data_format": "channels_last"},
           "policy": "float32", "params": 16_318_307, "train_step_s": 4.0,
           "train_voxels_s": 204_800.0, "infer_step_s": 1.0, "infer_voxels_s": 819_200.0,
           "peak_rss_mib": 1500.0, "loadavg_before": [1.0, 1, 1], "loadavg_after": [2.0, 1, 1]}
    report = {"scan_windows": 76, "results": {
        "a": row,
        "b": {"job": {"kind": "monai", "name": "monai_unet", "batch": 1}, "error": "exit 1"},
        "scan": {"job": {"scan": [240, 240, 155, 4], "data_format": "channels_last",
                         "precision": "auto", "overlap": 0.5, "batch_size": 2},
                 "available": False, "error": "predict_volume not available (x)"}}}
    text = V.markdown(report)
    # 76 windows, 2 per 1 s step: 38 s; voxel rates in millions.
    assert ("| lab depth 4 (Keras) | 2 | channels_last | float32 | 16,318,307 | 4.00 | 0.205 "
            "| 1.00 | 0.819 | 38 | 1500 | 1.0→2.0 |") in text
    assert "| MONAI UNet (torch) | 1 | failed: exit 1 |" in text
    assert text.endswith("batch 2): predict_volume not available (x)")


def test_scan_reports_a_missing_predict_volume(monkeypatch):
    monkeypatch.setitem(sys.modules, "vggunet.inference.volume", None)  # import fails
    result = V.measure_scan({})
    assert result["available"] is False
    assert result["error"].startswith("predict_volume not available")


def test_scan_times_predict_volume_against_the_contract(monkeypatch):
    calls = []

    def fake_predict_volume(model, volume, *, overlap, batch_size):
        calls.append((model.input_shape, volume.shape, overlap, batch_size))
        return np.zeros((*volume.shape[:3], 3), "float32")

    module = type(sys)("vggunet.inference.volume")
    module.predict_volume = fake_predict_volume
    monkeypatch.setitem(sys.modules, "vggunet.inference.volume", module)
    job = {"data_format": "channels_last", "precision": "float32", "patch": [8, 8, 8],
           "scan": [12, 8, 20, 4], "overlap": 0.5, "batch_size": 1}
    result = V.measure_scan(job)
    assert calls == [((None, 8, 8, 8, 4), (12, 8, 20, 4), 0.5, 1)]
    assert result["available"] is True and result["policy"] == "float32"
    assert result["windows"] == 2 * 1 * 4
    assert result["voxels_s"] == pytest.approx(12 * 8 * 20 / result["seconds"])
