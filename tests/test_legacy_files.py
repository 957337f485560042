"""`.keras` files written by an earlier vggunet keep loading, with identical predictions.

The files in `tests/fixtures/legacy_86619a9/` were written by main 86619a9, the release before
the package was reorganised (`make_fixtures.py` there shows how). They hold every custom layer
(`vggunet>BackbonePreprocess`, `>PadToMultiple`, `>CropToReference`), the lab's 2D and 3D U-Nets,
models compiled with vggunet's losses and metrics, and a checkpoint with Adam state written by a
training run. Each must load in safe mode, through `vggunet.load_model` and through plain Keras
after `import vggunet`, and predict what it predicted when it was written: equal up to float32
rounding, because oneDNN picks its kernels by the CPU's instruction set (the fixtures were written
on an AVX-512 CPU; on an AVX2 one the same weights give outputs that differ by about 1e-5 of
their range, while a weight that failed to load moves them by percents).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy_86619a9"
# file -> (name of its expected output in expected.npz, name of its input there)
FILES = {
    "small_unet.keras": ("small_unet", "image"),
    "lab_unet.keras": ("lab_unet", "lab_image"),
    "unet3d.keras": ("unet3d", "image_3d"),
    "compiled.keras": ("compiled", "image"),
    "checkpoint_last.keras": ("checkpoint", "image"),
}


def assert_same_prediction(actual: np.ndarray, desired: np.ndarray) -> None:
    """Equal up to float32 rounding across CPU kernels (1e-4 of the output's range)."""
    scale = float(np.abs(desired).max())
    np.testing.assert_allclose(actual, desired, rtol=1e-4, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "expected.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", sorted(FILES))
def test_legacy_file_loads_and_predicts_the_same(name, expected):
    from vggunet import load_model

    model = load_model(FIXTURES / name, compile=True)
    output, image = FILES[name]
    prediction = np.asarray(model.predict_on_batch(expected[image]))
    assert_same_prediction(prediction, expected[output])


@pytest.mark.parametrize("name", ["compiled_focal.keras", "compiled_jaccard.keras"])
def test_legacy_compiled_files_restore_their_losses(name, expected):
    from vggunet import load_model

    model = load_model(FIXTURES / name, compile=True)
    assert_same_prediction(np.asarray(model.predict_on_batch(expected["image"])),
                           expected["small_unet"])
    loss = model.loss
    config = loss.get_config()
    if name == "compiled_focal.keras":
        assert type(loss).__name__ == "FocalLoss"
        assert (config["gamma"], config["alpha"], config["ignore_index"]) == (1.5, 0.25, 255)
    else:
        assert type(loss).__name__ == "JaccardLoss"
        assert (config["num_classes"], config["smooth"]) == (3, 0.5)


def test_legacy_checkpoint_keeps_optimizer_state(expected):
    from vggunet import load_model

    model = load_model(FIXTURES / "checkpoint_last.keras", compile=True)
    assert int(model.optimizer.iterations.numpy()) == int(expected["checkpoint_iterations"]) > 0
    # Adam's moments were saved: not all zero after two epochs of training.
    moments = [v for v in model.optimizer.variables if v.path.endswith("_momentum")]
    assert len(moments) == len(model.trainable_weights)
    assert all(np.abs(np.asarray(v)).sum() > 0 for v in moments)
    metrics = [m["class_name"] for m in model.get_compile_config()["metrics"]]
    assert metrics == ["MeanIoU", "DiceScore", "PixelAccuracy"]
    assert type(model.loss).__name__ == "CombinedLoss"


def test_legacy_compiled_file_restores_metric_and_loss_settings():
    from vggunet import load_model

    model = load_model(FIXTURES / "compiled.keras", compile=True)
    metrics = [(m["class_name"], m["config"].get("num_classes"), m["config"]["ignore_index"])
               for m in model.get_compile_config()["metrics"]]
    assert metrics == [("MeanIoU", 3, 255), ("DiceScore", 3, 255), ("PixelAccuracy", None, 255),
                       ("PerClassIoU", 3, 255)]
    first = model.loss.get_config()["first"]["config"]
    assert (first["ignore_index"], first["class_weights"]) == (255, [0.5, 1.0, 2.0])


def test_legacy_files_load_with_plain_keras_after_import_vggunet(expected):
    """`import vggunet` (lazy) then `keras.saving.load_model`: the classes are registered."""
    code = (
        "import json, sys, numpy as np\n"
        "import vggunet\n"
        "import keras\n"
        f"m = keras.saving.load_model({str(FIXTURES / 'compiled.keras')!r}, safe_mode=True)\n"
        f"x = np.load({str(FIXTURES / 'expected.npz')!r})['image']\n"
        "print(json.dumps([type(m.loss).__name__, m.predict_on_batch(x).tolist()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loss_name, prediction = json.loads(done.stdout.strip().splitlines()[-1])
    assert loss_name == "CombinedLoss"
    assert_same_prediction(np.asarray(prediction, "float32"), expected["compiled"])
