"""Fork server for tests/test_faults.py: runs short vggunet training jobs that the test SIGKILLs.

TensorFlow takes seconds to import, so one server process imports it once (executing no TF op,
which keeps forking safe) and then forks a fresh child per job: the child builds a small VGG16
U-Net (`_small_unet`), trains it with `vggunet.training.train(..., resume=True)` and is killed
by the test at a chosen point. Each job is a real OS process that dies by SIGKILL, like a crashed
or preempted training run.

Protocol (one JSON object per line): the server prints `{"ready": true}`; for every job line read
on stdin it forks, prints `{"pid": ...}`, waits for the child and prints `{"pid": ..., "status":
...}` (the raw wait status). An empty line or EOF stops the server.

The child writes progress markers, one per line, to the job's `markers` file:

* `EPOCH_BEGIN e`, `BATCH e b` (after batch b of epoch e), `EPOCH_DONE e` (after the epoch's
  checkpoint and state.json are written), `FINISHED n reason`;
* `CKPT_PARTIAL e`: only when held there: `last.keras`'s temporary file is half written;
* `CKPT_RENAME e`: the temporary file is complete and fsynced, not yet renamed to `last.keras`;
* `CKPT_RENAMED e`: `last.keras` was replaced; `best.keras` and `state.json` are not written yet.

A job's `hold` = [marker, epoch] makes the child stop at that point (sleeping until it is killed),
which is how the test lands a kill inside a checkpoint write deterministically. The hooks are
monkeypatches installed in the child only; the package has no test switch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HOLD_SECONDS = 120.0


def _isbi_crops(data: Path, count: int):
    """32x32 crops of the first `count` ISBI images and their binary masks (numpy only)."""
    import numpy as np

    from vggunet.data import load_image, load_mask

    images, masks = [], []
    for i in range(count):
        image = load_image(data / "image" / f"{i}.png", channels=3)
        mask = load_mask(data / "label" / f"{i}.png", "binary", num_classes=2)
        for y, x in ((0, 0), (240, 240)):
            images.append(image[y:y + 32, x:x + 32])
            masks.append(mask[y:y + 32, x:x + 32])
    return np.stack(images), np.stack(masks)


def _small_unet():
    """VGG16's first block under a one-stage decoder, float32.

    What the jobs exercise (checkpoint writes, resume, seeded determinism) does not depend on the
    encoder's depth; each child traces its train step afresh, and this model's step traces in
    about 60% of the two-block U-Net's time, the bulk of a short job's CPU time.
    """
    from vggunet import build_vgg_unet

    return build_vgg_unet(
        "vgg16", input_shape=(None, None, 3), num_classes=2, weights=None,
        skip_layers=["block1_conv2"], bottleneck_source="block1_pool", decoder_filters=(8,),
        bottleneck_filters=16, precision="float32",
    )


def _job(cfg: dict) -> int:
    """Runs one training job in a forked child; returns the exit code."""
    import keras

    import vggunet.training as training
    import tensorflow as tf

    start = time.perf_counter()
    markers = open(cfg["markers"], "a", buffering=1, encoding="utf-8")
    hold = cfg.get("hold")
    current = {"epoch": -1}

    def emit(*parts: object) -> None:
        markers.write(" ".join(str(p) for p in parts) + f" t={time.perf_counter() - start:.3f}\n")
        markers.flush()

    def held(name: str) -> bool:
        return bool(hold) and hold[0] == name and hold[1] == current["epoch"]

    def wait_for_kill() -> None:
        time.sleep(HOLD_SECONDS)
        emit("NOT_KILLED")
        os._exit(3)

    original_save = keras.Model.save

    def save(self, filepath, *args, **kwargs):
        original_save(self, filepath, *args, **kwargs)
        path = Path(filepath)
        if path.name.startswith(".last.") and held("CKPT_PARTIAL"):
            # A write in progress: only the first half of the bytes has reached the file.
            data = path.read_bytes()
            with open(path, "r+b") as handle:
                handle.truncate(len(data) // 2)
            emit("CKPT_PARTIAL", current["epoch"])
            wait_for_kill()

    original_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        is_last = Path(dst).name == "last.keras"
        if is_last:
            emit("CKPT_RENAME", current["epoch"])
            if held("CKPT_RENAME"):
                wait_for_kill()
        original_replace(src, dst, *args, **kwargs)
        if is_last:
            emit("CKPT_RENAMED", current["epoch"])
            if held("CKPT_RENAMED"):
                wait_for_kill()

    keras.Model.save = save
    os.replace = replace

    class Marks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            current["epoch"] = epoch
            emit("EPOCH_BEGIN", epoch)

        def on_train_batch_end(self, batch, logs=None):
            emit("BATCH", current["epoch"], batch)

        def on_epoch_end(self, epoch, logs=None):
            # User callbacks run after vggunet's checkpoint callback has written state.json.
            emit("EPOCH_DONE", epoch)

    keras.utils.set_random_seed(int(cfg.get("seed", 0)))
    model = _small_unet()
    images, masks = _isbi_crops(Path(cfg["data"]), int(cfg.get("images", 4)))
    dataset = tf.data.Dataset.from_tensor_slices((images, masks)).repeat().batch(2)
    result = training.train(
        model, dataset, out_dir=cfg["out"], epochs=int(cfg["epochs"]),
        steps_per_epoch=int(cfg["steps"]), metrics=("miou",), jit_compile=False,
        resume=True, tensorboard=False, verbose=0, callbacks=[Marks()],
    )
    emit("FINISHED", result.epochs_completed, result.stopped_reason)
    return 0


def _determinism_job(cfg: dict) -> int:
    """Trains a few seeded steps with op determinism on and saves the final weights (.npz)."""
    import keras
    import numpy as np
    import tensorflow as tf

    import vggunet.training as training
    from vggunet.data import find_pairs, make_dataset

    keras.utils.set_random_seed(int(cfg["seed"]))
    if cfg.get("deterministic", True):
        tf.config.experimental.enable_op_determinism()
    model = _small_unet()
    data = Path(cfg["data"])
    pairs = find_pairs(data / "image", data / "label")[:4]
    # The real pipeline: seeded shuffling, random crops and flips.
    dataset = make_dataset(pairs=pairs, num_classes=2, mask_format="binary", crop=(48, 48),
                           flip=True, batch_size=2, seed=int(cfg["seed"]), repeat=True)
    training.train(model, dataset, out_dir=cfg["out"], epochs=2, steps_per_epoch=int(cfg["steps"]),
                   metrics=("miou",), jit_compile=False, tensorboard=False, verbose=0)
    np.savez(cfg["weights"], *model.get_weights())
    return 0


def serve() -> None:
    """Imports TensorFlow and vggunet once, then forks one child per job read from stdin."""
    import keras  # noqa: F401

    import vggunet.data  # noqa: F401
    import vggunet.training  # noqa: F401
    import vggunet.unet  # noqa: F401

    def say(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    say({"ready": True})
    for line in sys.stdin:
        if not line.strip():
            break
        cfg = json.loads(line)
        pid = os.fork()
        if pid == 0:
            # The child's prints go to its own log: the server's stdout carries the protocol.
            log = os.open(cfg["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            code = 1
            try:
                code = (_determinism_job if cfg.get("job") == "determinism" else _job)(cfg)
            except BaseException as exc:  # noqa: BLE001  reported through the markers file
                with open(cfg["markers"], "a", encoding="utf-8") as handle:
                    handle.write(f"ERROR {type(exc).__name__}: {exc}\n")
            finally:
                os._exit(code)
        say({"pid": pid})
        _, status = os.waitpid(pid, 0)
        say({"pid": pid, "status": status})


if __name__ == "__main__":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # here, so importing the helpers is inert
    serve()
