"""The tutorial notebooks run top to bottom (small settings) and print what they promise.

Each notebook is copied to a temporary folder and executed there with nbclient, so outputs and
run folders never dirty the repository. Kernel: `python3` (the venv's; the Makefile installs the
spec with `python -m ipykernel install --sys-prefix`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
ISBI = REPO.parent / "shared" / "data" / "isbi2012"
BRATS = REPO.parent / "shared" / "data" / "brats3d" / "train"


def run_notebook(name: str, tmp_path: Path, timeout: int = 600) -> str:
    """Executes a copy of `notebooks/<name>` in tmp_path; returns all text outputs joined."""
    work = tmp_path / "notebooks"
    work.mkdir()
    shutil.copy(NOTEBOOKS / name, work / name)
    nb = nbformat.read(work / name, as_version=4)
    env_before = dict(os.environ)
    os.environ.update(TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="module://matplotlib_inline.backend_inline")
    if (ISBI / "image").is_dir():
        os.environ["VGGUNET_ISBI_DIR"] = str(ISBI)  # the relative path does not reach it from tmp
    if BRATS.is_dir():
        os.environ["VGGUNET_BRATS_DIR"] = str(BRATS)
    try:
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                         resources={"metadata": {"path": str(work)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    nbformat.write(nb, work / name)
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append(output.get("text", ""))
            elif "data" in output and "text/plain" in output["data"]:
                texts.append(output["data"]["text/plain"])
    return "\n".join(texts)


def test_notebooks_have_no_stored_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path.name} has stored outputs"


def test_01_build_and_inspect(tmp_path):
    text = run_notebook("01_build_and_inspect.ipynb", tmp_path)
    assert "parameters: " in text
    params = int(text.split("parameters: ")[1].split()[0].replace(",", ""))
    assert params > 14_000_000  # the VGG16 encoder alone has 14.7M
    assert "block5_conv3" in text  # the layer table
    assert "frozen layers" in text
    assert "probabilities sum to 1: True" in text
    assert "-> output (1, 200, 300, 2)" in text


@pytest.mark.slow
def test_02_finetune_isbi_quick(tmp_path):
    text = run_notebook("02_finetune_isbi.ipynb", tmp_path)
    assert "epochs completed: 2" in text
    assert "mean IoU" in text
    assert "tiled prediction (" in text
    run = tmp_path / "notebooks" / "runs" / "02_finetune_isbi"
    for name in ("training_curve.png", "predictions.png", "metrics.json",
                 "checkpoints/best.keras"):
        assert (run / name).is_file(), name


@pytest.mark.slow
@pytest.mark.skipif(not BRATS.is_dir(), reason="needs ../shared/data/brats3d")
def test_03_brain_tumour_3d_quick(tmp_path):
    text = run_notebook("03_brain_tumour_3d.ipynb", tmp_path)
    assert "lecture model: 833,507 parameters" in text
    assert "assignment model: 16,318,307 parameters" in text
    assert "one batch: images (2, 64, 64, 16, 4), labels (2, 64, 64, 16, 3)" in text
    assert "epochs completed: 2" in text
    assert "probabilities (160, 160, 16, 3), labels (160, 160, 16)" in text
    assert "sensitivity" in text and "specificity" in text and "edema" in text
    run = tmp_path / "notebooks" / "runs" / "03_brain_tumour_3d"
    for name in ("slices.png", "scores.json", "checkpoints/best.keras", "log.csv"):
        assert (run / name).is_file(), name
