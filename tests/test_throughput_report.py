"""The throughput benchmark's report (`benchmarks/throughput_report.py`, issue 4).

The measuring takes an hour and needs the `bench` extra, so it is not run here; what is checked
is how figures become ratios and rows (that BENCHMARKS.md holds them: `test_benchmarks_md.py`).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import throughput_report as R  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "throughput.json"


def _section(text: str) -> str:
    start = text.index(R.SECTION)
    end = text.find("\n## ", start + len(R.SECTION))
    return text[start:] if end < 0 else text[start:end + 1]


def test_summarize_states_ratios_against_the_contenders_and_the_peak():
    results = {
        "vggunet": {"train_img_s": 6.0, "infer_img_s": 20.0, "train_gflop_s": 300.0,
                    "train_step_s": 1.0, "peak_rss_train_mib": 2048.0},
        "sm": {"train_img_s": 4.0, "infer_img_s": 16.0, "peak_rss_train_mib": 1024.0},
        "conv_peak": {"peak_bfloat16_gflop_s": 400.0},
        "conv_peak_end": {"peak_bfloat16_gflop_s": 500.0},
        "tiled_1024": {"s_per_mpix": 1.0}, "tiled_2048": {"s_per_mpix": 1.1},
        "tiled_4096": {"s_per_mpix": 1.2, "peak_rss_mib": 1536.0},
        "train_448": {"s_per_mpix": 2 * 1.0 / 8 / (224 * 224 / 1e6)},
    }
    s = R.summarize(results)
    assert s["train_vggunet_over_sm"] == 1.5 and s["infer_vggunet_over_sm"] == 1.25
    assert s["bf16_peak_gflop_s"] == 500.0  # the better of the two probes
    assert s["train_efficiency_vs_bf16_peak"] == 0.6
    assert s["train_rss_vggunet_over_sm"] == 2.0
    assert s["train_vggunet_over_kuc"] is None  # a contender that did not run
    assert s["tiled_s_per_mpix_spread"] == pytest.approx(0.2)
    assert s["tiled_4096_peak_rss_gib"] == 1.5
    assert s["train_448_over_224_per_pixel"] == pytest.approx(2.0)


def test_a_failed_contender_is_a_row_that_says_so_and_missing_figures_are_dashes():
    report = json.loads(RESULTS.read_text())
    broken = copy.deepcopy(report)
    broken["results"]["sm"] = {"error": "ImportError: No module named 'segmentation_models'"}
    broken["summary"] = R.summarize(broken["results"])
    text = R.markdown(broken)
    row = next(line for line in text.splitlines() if line.startswith("| segmentation_models"))
    assert "failed: ImportError: No module named 'segmentation_models'" in row
    target = next(line for line in text.splitlines()
                  if line.startswith("| training img/s, vggunet default / segmentation_models"))
    assert "| — |" in target


def test_write_section_replaces_only_its_section(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\n## Before\n\nkept\n\n{R.SECTION}\n\nold\n\n## After\n\nkept\n")
    R.write_section(md, f"{R.SECTION}\n\nnew\n")
    assert md.read_text() == (f"# Benchmarks\n\n## Before\n\nkept\n\n{R.SECTION}\n\nnew\n\n"
                              "## After\n\nkept\n")
    R.write_section(tmp_path / "new.md", f"{R.SECTION}\n\nfirst\n")
    assert (tmp_path / "new.md").read_text() == f"# Benchmarks\n\n{R.SECTION}\n\nfirst\n"
    assert not list(tmp_path.glob("*.tmp"))
