"""BENCHMARKS.md says what was measured: its generated parts are what the committed results
files render to.

Each benchmark writes raw figures to `benchmarks/results/*.json` and renders its tables from
them; a table edited by hand, or a results file rerun without regenerating the table, fails
here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.fixture(scope="module")
def benchmarks_md() -> str:
    return (REPO / "BENCHMARKS.md").read_text()


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end + 1]


@pytest.mark.parametrize("module, results", [("throughput_report", "throughput.json"),
                                              ("backbones", "backbones.json")])
def test_generated_sections_are_the_results_files(benchmarks_md, module, results):
    renderer = __import__(module)
    report = json.loads((RESULTS / results).read_text())
    if module == "throughput_report":
        assert renderer.summarize(report["results"]) == pytest.approx(report["summary"])
    # write_section leaves one blank line before the next heading.
    assert _section(benchmarks_md, renderer.SECTION) == renderer.markdown(report) + "\n"


def test_isbi_transfer_table_is_the_results_file(benchmarks_md):
    import transfer_isbi
    import transfer_report

    committed = benchmarks_md.split(transfer_report.TABLE_BEGIN, 1)[1]
    committed = committed.split(transfer_report.TABLE_END, 1)[0].strip()
    results = json.loads((RESULTS / "transfer_isbi.json").read_text())
    table = transfer_report.render_table(results, transfer_isbi.CONFIGS)
    assert table.count("\n") > 20 and committed == table.strip()


def test_photo_ablation_table_is_the_results_file(benchmarks_md, capsys):
    import photos_report

    assert photos_report.main(["--ablations", "recipe/seed0/15min"]) == 0
    table = capsys.readouterr().out.strip()
    assert table.count("\n") >= 3 and table in benchmarks_md


@pytest.mark.parametrize("task", ["brats", "hippocampus"])
def test_volume_quality_rows_are_the_results_files(benchmarks_md, task):
    import volumes_quality

    rendered = volumes_quality.markdown(json.loads(
        (RESULTS / f"volumes_quality_{task}.json").read_text()))
    rows = [line for line in rendered.splitlines()
            if line.startswith("| ") and not line.startswith("| class")]
    assert len(rows) >= 3
    section = _section(benchmarks_md, "## Volumes (3D) (issue 15)")
    for row in rows:
        name, figures = row.split(" | ", 1)
        # BENCHMARKS.md spells class names out ("non-enhancing tumour", "anterior hippocampus
        # (1)") and bolds the hippocampus mean Dice; the figures are the file's.
        assert any(line.startswith(name + " ") and line.replace("**", "").endswith(" " + figures)
                   for line in section.splitlines()), row
