"""A run folder keeps its integrity: the run lock, resumes with changed settings, state files of
the last release, the permissions of every file a run writes, and output that reads right.

Each run trains a 1-stage VGG16 U-Net (the encoder's first block) on 32x32 crops of the real
ISBI images for an epoch or two, so a run takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from conftest import ONE_BLOCK_FLAGS, one_block_unet  # noqa: E402
from vggunet.errors import RunLockedError, SettingsMismatchError  # noqa: E402
from vggunet.training import finetune, train  # noqa: E402

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
LEGACY = TESTS / "fixtures" / "legacy_86619a9"
QUIET = dict(jit_compile=False, tensorboard=False, verbose=0, metrics=("miou",))


tiny_unet = one_block_unet


TINY_FLAGS = ONE_BLOCK_FLAGS  # the command line's flags for the same architecture


@pytest.fixture(scope="module")
def crops(isbi_dir):
    """4 ISBI crops of 32x32: images (4, 32, 32, 3) raw, masks (4, 32, 32) in {0, 1}."""
    from _kill_driver import _isbi_crops

    return _isbi_crops(isbi_dir, 2)


def dataset(crops):
    return tf.data.Dataset.from_tensor_slices(crops).batch(2)


def wait_for_lock(path: Path, proc: subprocess.Popen, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return json.loads(path.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"the lock holder ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"no lock at {path} within {timeout} s")


# ------------------------------------------------------------------ the run lock


def test_a_live_lock_refuses_a_run_at_once_and_a_dead_one_is_cleared(crops, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom vggunet.training.lock import RunLock\n"
                               "RunLock(sys.argv[1]).acquire()\ntime.sleep(600)", str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        held = wait_for_lock(out / "run.lock", holder)
        assert held["pid"] == holder.pid and held["host"] == socket.gethostname()
        built = []

        def model_fn():
            built.append(1)
            return tiny_unet()

        with pytest.raises(RunLockedError) as info:
            train(model_fn, dataset(crops), out_dir=out, epochs=1, **QUIET)
        message = str(info.value)
        assert f"run folder '{out}' is in use by another training run: process {holder.pid} " \
               f"on host '{socket.gethostname()}', started {held['started']}" in message
        assert str(out) in held["command"] and f"lock file '{out / 'run.lock'}'" in message
        assert isinstance(info.value, RuntimeError)
        assert built == []  # refused before the model was built
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL leaves the file behind; its process is gone, so the next run takes it over.
    assert json.loads((out / "run.lock").read_text())["pid"] == holder.pid
    lines: list[str] = []
    result = train(tiny_unet(), dataset(crops), out_dir=out, epochs=1, say=lines.append, **QUIET)
    assert result.epochs_completed == 1
    assert lines[0].startswith(f"Cleared a stale run lock in '{out}': process {holder.pid} ")
    assert lines[0].endswith("is no longer running.")
    assert not (out / "run.lock").exists()


def test_the_lock_is_released_when_training_fails(crops, tmp_path):
    class Boom(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            raise RuntimeError("boom")

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        train(tiny_unet(), dataset(crops), out_dir=out, epochs=1, callbacks=[Boom()], **QUIET)
    assert not (out / "run.lock").exists()
    again = train(tiny_unet(), dataset(crops), out_dir=out, epochs=1, resume=True, **QUIET)
    assert again.epochs_completed == 1


def _cli_data(isbi_dir: Path, root: Path) -> list[str]:
    from vggunet.demo import make_sample

    make_sample(isbi_dir, root, count=2, size=32)
    return ["--images", str(root / "image"), "--masks", str(root / "label"), "--mask-format",
            "binary", "--num-classes", "2", "--weights", "none", *TINY_FLAGS,
            "--precision", "float32",
            "--batch-size", "2", "--no-tensorboard"]


@pytest.mark.slow
def test_two_cli_runs_into_one_folder_the_second_stops_at_once(isbi_dir, tmp_path, capsys):
    from vggunet.cli import main

    flags = _cli_data(isbi_dir, tmp_path / "data")
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "vggunet", "train", *flags, "--epochs", "500", "--out", str(out),
         "--quiet"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                    "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lock(out / "run.lock", first)
        started = time.perf_counter()
        code = main(["train", *flags, "--epochs", "1", "--out", str(out), "--quiet"])
        elapsed = time.perf_counter() - started
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.strip()]
        assert code == 2 and len(errors) == 1, captured
        assert errors[0].startswith(f"vggunet train: error: run folder '{out}' is in use by "
                                    f"another training run: process {first.pid} on host ")
        assert "-m vggunet train" in errors[0]
        # Stopped before reading the data or building a model.
        assert "data:" not in captured.out and elapsed < 20, (captured.out, elapsed)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    # The killed run's lock is stale: a resume clears it, says so, and finishes.
    code = main(["train", *flags, "--epochs", "1", "--resume", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"Cleared a stale run lock in '{out}': process {first.pid} " in captured.out
    assert not (out / "run.lock").exists()

    # --resume with another learning rate is refused, naming both values.
    code = main(["train", *flags, "--epochs", "2", "--lr", "0.1", "--resume", "--out", str(out),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "learning_rate: stored 0.001, requested 0.1 (phase 1 has started)" in err


# ------------------------------------------------------------------ resume with settings


def test_resume_applies_safe_changes_and_refuses_the_others(crops, tmp_path):
    out = tmp_path / "run"
    train(tiny_unet(), dataset(crops), out_dir=out, epochs=1, **QUIET)
    lines: list[str] = []
    result = train(tiny_unet(), dataset(crops), out_dir=out, epochs=2, early_stopping=3,
                   resume=True, say=lines.append, **QUIET)
    assert result.epochs_completed == 2
    assert "Applying changed settings: epochs 1 -> 2; early_stopping None -> 3." in lines
    state = json.loads((out / "state.json").read_text())
    assert state["version"] == 2 and state["completed_epochs"] == 2
    assert state["settings"]["run"]["early_stopping"] == 3
    assert state["settings"]["phases"][0]["epochs"] == 2
    assert state["settings"]["compile"]["metrics"] == ["miou"]

    before = (out / "state.json").read_bytes(), (out / "checkpoints" / "last.keras").stat()
    with pytest.raises(SettingsMismatchError) as info:
        train(tiny_unet(), dataset(crops), out_dir=out, epochs=3, resume=True,
              **{**QUIET, "learning_rate": 0.1, "loss": "dice"})
    message = str(info.value)
    assert "loss: stored 'ce+dice', requested 'dice'" in message
    assert "learning_rate: stored 0.001, requested 0.1 (phase 1 has started)" in message
    after = (out / "state.json").read_bytes(), (out / "checkpoints" / "last.keras").stat()
    assert after[0] == before[0] and after[1].st_mtime_ns == before[1].st_mtime_ns
    assert not (out / "run.lock").exists()


def _legacy_model() -> keras.Model:
    spec = importlib.util.spec_from_file_location("legacy_fixtures", LEGACY / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.small_encoder_unet()


def test_a_state_of_the_last_release_still_resumes(crops, tmp_path):
    from vggunet import load_model

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copyfile(LEGACY / "checkpoint_last.keras", out / "checkpoints" / "last.keras")
    shutil.copyfile(LEGACY / "checkpoint_state.json", out / "state.json")
    stored = int(load_model(out / "checkpoints" / "last.keras").optimizer.iterations.numpy())
    images, masks = crops
    data = tf.data.Dataset.from_tensor_slices((images[..., :1], masks)).batch(2)
    lines: list[str] = []
    result = train(_legacy_model(), data, out_dir=out, epochs=3, resume=True, tensorboard=False,
                   verbose=0, say=lines.append)
    assert result.epochs_completed == 3 and result.stopped_reason == "completed"
    assert int(result.model.optimizer.iterations.numpy()) == stored + 2
    assert any("version 1" in line for line in lines)
    assert "Applying changed settings: epochs 2 -> 3." in lines
    state = json.loads((out / "state.json").read_text())
    assert state["version"] == 2 and state["settings"]["phases"][0]["epochs"] == 3


# ------------------------------------------------------------------ file modes


MODES_SCRIPT = """
import json, os, sys
from pathlib import Path
import numpy as np, tensorflow as tf
sys.path.insert(0, {tests!r})
from test_run_folder import tiny_unet
from vggunet.training import train
data = np.load({crops!r})
ds = tf.data.Dataset.from_tensor_slices((data["images"], data["masks"])).batch(2)
modes = {{}}
for umask in (0o022, 0o002):
    os.umask(umask)
    out = Path({root!r}) / f"run{{umask:o}}"
    train(tiny_unet(), ds, ds, out_dir=out, epochs=1, jit_compile=False, verbose=0)
    with open(out / "log.csv", "a") as log:  # a row a crash left: the resume rewrites the log
        log.write("7,0,0,0,0,0,0,0,0\\n")
    train(tiny_unet(), ds, ds, out_dir=out, epochs=1, jit_compile=False, verbose=0, resume=True)
    modes[umask] = {{str(p.relative_to(out)): [p.is_dir(), p.stat().st_mode & 0o777]
                    for p in [out, *out.rglob("*")]}}
print("MODES " + json.dumps(modes))
"""


@pytest.mark.slow
def test_every_file_a_run_writes_has_the_mode_the_umask_gives(crops, tmp_path):
    np.savez(tmp_path / "crops.npz", images=crops[0], masks=crops[1])
    script = MODES_SCRIPT.format(tests=str(TESTS), crops=str(tmp_path / "crops.npz"),
                                 root=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO),
                                            "TF_CPP_MIN_LOG_LEVEL": "3"})
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MODES ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    for umask, modes in json.loads(line[-1][len("MODES "):]).items():
        umask = int(umask)
        names = set(modes)
        assert {"state.json", "log.csv", "checkpoints/last.keras",
                "checkpoints/best.keras"} <= names, names
        assert any(name.startswith("tensorboard/") and not modes[name][0] for name in names)
        assert "run.lock" not in names and not any(".vgtmp" in name for name in names)
        wrong = {name: oct(mode) for name, (is_dir, mode) in modes.items()
                 if mode != (0o777 if is_dir else 0o666) & ~umask}
        assert not wrong, f"umask {umask:o}: {wrong}"


# ------------------------------------------------------------------ output


def test_output_has_no_shuffle_warning_nor_recompile_advice_and_verbose_0_is_silent(
        crops, tmp_path, capsys):
    from vggunet.training.loop import _keras_shuffles

    options = dict(jit_compile=False, tensorboard=False, verbose=0, phase1_epochs=1,
                   phase2_epochs=1, unfreeze="top1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        finetune(tiny_unet(), dataset(crops), out_dir=tmp_path / "quiet", **options)
    assert not [w for w in caught if "shuffle" in str(w.message)]
    assert capsys.readouterr().out == ""

    lines: list[str] = []
    finetune(tiny_unet(), dataset(crops), out_dir=tmp_path / "said", say=lines.append,
             **options)
    assert lines[0] == "No validation data: monitoring 'mean_iou' instead of 'val_mean_iou'."
    assert lines[1].startswith("Phase 1 (frozen encoder): epochs 1-1, lr=0.001. freeze")
    assert lines[2].startswith("Phase 2 (fine-tune): epochs 2-2, lr=0.0001. unfreeze")
    assert all("layer(s) changed" in line for line in lines[1:3])
    assert not [line for line in lines if "ecompile" in line]
    assert capsys.readouterr().out == ""

    # Keras shuffles arrays itself; datasets and generators arrive shuffled.
    assert _keras_shuffles((crops[0], crops[1]))
    assert not _keras_shuffles(dataset(crops))
    assert not _keras_shuffles(x for x in [crops])
