"""The bundled ISBI sample, its regeneration, and the `vggunet demo` command end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggunet.demo import SAMPLE_DIR, make_sample, sample_pairs

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO.parent / "shared" / "data" / "isbi2012"


def test_sample_is_bundled_small_and_binary():
    pairs = sample_pairs()
    assert [p[0].name for p in pairs] == [f"{i}.png" for i in range(8)]
    total = sum(f.stat().st_size for f in SAMPLE_DIR.rglob("*.png"))
    assert total < 300_000
    for image_path, label_path in pairs:
        image, label = Image.open(image_path), Image.open(label_path)
        assert image.size == label.size == (128, 128)
        assert image.mode == label.mode == "L"
        assert set(np.unique(np.asarray(label)).tolist()) <= {0, 255}
    readme = (SAMPLE_DIR.parent / "README.md").read_text()
    for needle in ("Cardona", "Arganda-Carreras", "zhixuhao/unet", "make_sample"):
        assert needle in readme


def test_make_sample_regenerates_the_bundled_files(tmp_path):
    if not (ISBI / "image").is_dir():
        pytest.skip(f"ISBI data not found at {ISBI}")
    written = make_sample(ISBI, tmp_path / "isbi")
    assert len(written) == 16
    for path in written:
        bundled = SAMPLE_DIR / path.parent.name / path.name
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(bundled)))


def test_make_sample_small_copy_and_missing_source(tmp_path):
    written = make_sample(SAMPLE_DIR, tmp_path / "tiny", count=2, size=32)
    assert sorted(p.relative_to(tmp_path / "tiny").as_posix() for p in written) == [
        "image/0.png", "image/1.png", "label/0.png", "label/1.png"]
    assert Image.open(written[0]).size == (32, 32)
    with pytest.raises(FileNotFoundError, match="image"):
        make_sample(tmp_path / "nowhere", tmp_path / "x")


def test_demo_model_says_which_encoder_in_one_line(monkeypatch, tmp_path):
    from vggunet.demo import build_demo_model

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # empty cache: random encoder, no download
    lines: list[str] = []
    model = build_demo_model(say=lines.append, decoder_filters=(16, 8, 8, 8, 8),
                             bottleneck_filters=16)
    assert len(lines) == 1 and "RANDOM" in lines[0]
    assert model.output_shape[-1] == 2


@pytest.mark.slow
def test_demo_command_writes_curve_grid_and_metrics(tmp_path):
    """The whole `vggunet demo` (TF import included); what it writes and scores, not how
    long it takes (no timed asserts: a loaded CI machine must not fail it). 2 + 2 epochs
    instead of the default 10 + 12 (`make demo` runs those): the same code path at a third of
    the suite's time, and already both classes are segmented."""
    out = tmp_path / "demo"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "vggunet", "demo", "--out", str(out),
                           "--phase1-epochs", "2", "--phase2-epochs", "2"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("training_curve.png", "predictions.png", "metrics.json"):
        assert (out / name).is_file(), name
        assert str(out / name) in proc.stdout
    encoder_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("encoder: vgg16")]
    assert len(encoder_lines) == 1
    assert "block5_conv3" in proc.stdout  # the layer table
    scores = json.loads((out / "metrics.json").read_text())
    assert scores["num_images"] == 2
    assert scores["class_names"] == ["membrane", "cell"]
    assert scores["mean_iou"] > 0.3
    assert scores["per_class_iou"][0] > 0.1  # membranes found, not all pixels called "cell"
    assert "phase 1 2 epochs" in proc.stdout and "trained 4 epochs" in proc.stdout


@pytest.mark.parametrize("activation", ["sigmoid", "linear"])
def test_prediction_grid_thresholds_a_one_channel_model(activation, tmp_path, monkeypatch):
    """A one-channel (sigmoid or logit) model is thresholded, not argmax-ed to all zeros."""
    keras = pytest.importorskip("keras")
    import vggunet.plots
    from vggunet.demo import write_prediction_grid

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Activation(activation)(inputs))
    images = np.linspace(-3, 3, 2 * 4 * 4, dtype="float32").reshape(2, 4, 4, 1)
    masks = (images[..., 0] > 0).astype("int32")
    drawn = {}
    original = vggunet.plots.plot_predictions

    def spy(images, true_masks, pred_masks, path, **kwargs):
        drawn["preds"] = np.asarray(pred_masks)
        return original(images, true_masks, pred_masks, path, **kwargs)

    monkeypatch.setattr(vggunet.plots, "plot_predictions", spy)
    path = write_prediction_grid(model, images, masks, tmp_path / "grid.png")
    assert path.is_file() and Image.open(path).format == "PNG"
    np.testing.assert_array_equal(drawn["preds"], masks)  # sigmoid > 0.5 / logit > 0

