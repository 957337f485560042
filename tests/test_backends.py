"""vggunet on every Keras backend: TensorFlow, JAX and PyTorch, each in its own process.

These run with `make test-backends` (which installs the `backends` extra and sets
VGGUNET_TEST_BACKENDS=1); `make test` skips them, so it stays fast and needs neither torch nor
jax. The work itself is in `_backend_smoke.py`; here each backend's report is checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("VGGUNET_TEST_BACKENDS") != "1",
    reason="backend tests run with `make test-backends` (VGGUNET_TEST_BACKENDS=1)",
)

SCRIPT = Path(__file__).with_name("_backend_smoke.py")
REPO = Path(__file__).resolve().parents[1]
MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def run_smoke(backend: str, mode: str, work: Path, timeout: int = 300) -> dict:
    if importlib.util.find_spec(MODULES[backend]) is None:
        pytest.fail(f"{MODULES[backend]} is not installed; run `make test-backends` "
                    f"(pip install -e '.[test,backends]').")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(work)], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"{backend} smoke test failed (exit {proc.returncode}):\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return json.loads(lines[-1][len("RESULT "):])


def check_model(report: dict, name: str) -> None:
    assert report["output_dtype"] == "float32", name
    assert report["output_finite"], name
    assert report["table_rows"] == report["model_layers"], name
    assert {"input", "encoder", "skip", "bottleneck", "decoder", "head"} <= set(report["roles"])
    assert report["table_has_totals"], name
    assert report["loss_finite"], (name, report["logs"])
    assert report["trainable_changed"], f"{name}: train_on_batch did not change the weights"
    assert report["frozen_unchanged"], f"{name}: a frozen encoder weight changed"
    assert report["reload_max_abs_diff"] <= 1e-6, (name, report["reload_max_abs_diff"])
    assert report["reload_compiled"] and report["reload_trainable_same"], name


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_builders_train_save_reload(backend: str, tmp_path: Path) -> None:
    result = run_smoke(backend, "builders", tmp_path)
    assert result["backend"] == backend

    vgg = result["vgg_unet"]
    check_model(vgg, "vgg_unet")
    assert vgg["output_shape"] == [2, 64, 64, 3]
    assert vgg["odd_size_output_shape"] == [1, 40, 56, 3]
    assert vgg["softmax_sums_to_one"]
    assert vgg["frozen_layers"] == 13  # VGG16's 13 convolutions
    assert set(vgg["logs"]) >= {"loss", "mean_iou", "dice_score", "pixel_accuracy"}

    unet = result["unet"]
    check_model(unet, "unet")
    assert unet["reference_params"] == 8_640_471
    assert unet["output_shape"] == [2, 32, 32, 3]

    unet3d = result["unet_3d"]
    check_model(unet3d, "unet_3d")
    assert unet3d["reference_params"] == 833_507
    assert unet3d["output_shape"] == [2, 8, 8, 8, 2]
    assert unet3d["channels_first_output_shape"] == [1, 3, 8, 8, 8]

    # "auto" precision: bfloat16 only where the backend has fast CPU kernels for it.
    expected = "float32" if backend == "jax" or not result["cpu_bf16"] else "mixed_bfloat16"
    assert result["auto_precision"] == expected
    assert vgg["compute_dtype"] == ("bfloat16" if expected == "mixed_bfloat16" else "float32")

    refusals = result["refusals"]
    if backend != "tensorflow":
        assert "KERAS_BACKEND=tensorflow" in refusals["tf_strategy_error"]
        assert repr(backend) in refusals["tf_strategy_error"]
    if backend != "jax":
        assert "JAX backend only" in refusals["data_parallel_error"]


def test_jax_data_parallel_matches_one_device(tmp_path: Path) -> None:
    result = run_smoke("jax", "data_parallel", tmp_path)
    report = result["data_parallel"]
    assert report["devices"] == ["cpu:0", "cpu:1"]
    assert report["kernel_devices"] == 2  # variables replicated on both devices
    assert report["batch_layout"][0] == "batch"  # batches split along their first axis
    assert report["weights_moved"] > 1e-4  # the step did something worth comparing
    assert report["data_parallel_loss"] == pytest.approx(report["single_loss"], rel=1e-5)
    assert report["weights_max_abs_diff"] < 1e-5
