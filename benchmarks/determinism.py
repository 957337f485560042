"""What op determinism costs: training-step time with and without it, on CPU.

`tf.config.experimental.enable_op_determinism()` is process-wide and cannot be undone, so each
mode runs in its own subprocess. Each subprocess seeds everything
(`keras.utils.set_random_seed`), builds the same VGG16 U-Net (random encoder, float32), compiles
it with vggunet's defaults (`compile_model`: ce+dice, mIoU/Dice/accuracy, Adam), runs warm-up
steps (tracing and compilation excluded from the timing), then times blocks of `steps`
training steps on fixed random batches. The two processes stay alive side by side and time
their blocks in turn, so changes in machine load hit both modes alike; the summary gives the
median seconds per step of each and their ratio.

    .venv/bin/python benchmarks/determinism.py                 # prints a JSON summary
    .venv/bin/python benchmarks/determinism.py --steps 5 --repeats 6 --size 128 --batch 2 \\
        --out benchmarks/results/determinism.json

The figure is machine- and load-dependent: compare the two modes of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _child(args: argparse.Namespace) -> None:
    """Serves timing requests in this process, with determinism on or off.

    Prints `ready` after the warm-up; then for every `time` line on stdin times `steps` training
    steps and prints the seconds per step; `quit` ends it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # the public API only enables

    from vggunet import build_vgg_unet
    from vggunet.training import compile_model

    keras.utils.set_random_seed(0)
    if args.mode == "deterministic":
        tf.config.experimental.enable_op_determinism()
    model = build_vgg_unet("vgg16", input_shape=(None, None, 3), num_classes=2, weights=None,
                           precision="float32")
    compile_model(model, learning_rate=1e-4)
    rng = np.random.default_rng(0)
    images = (rng.random((args.batch, args.size, args.size, 3)) * 255).astype("float32")
    masks = rng.integers(0, 2, (args.batch, args.size, args.size)).astype("int32")
    for _ in range(args.warmup):
        model.train_on_batch(images, masks)
    print(json.dumps({"ready": True, "op_determinism": tf_config.is_op_determinism_enabled()}),
          flush=True)
    for line in sys.stdin:
        if line.strip() != "time":
            break
        start = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(images, masks)
        print(json.dumps({"s_per_step": (time.perf_counter() - start) / args.steps}),
              flush=True)


def main(argv: list[str] | None = None) -> dict:
    """Runs both modes in subprocesses and prints (and optionally writes) the comparison.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`).

    Returns:
        The summary dict.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=6, help="timed blocks per mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--size", type=int, default=128, help="square input side in pixels")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the JSON summary here")
    parser.add_argument("--mode", choices=("default", "deterministic"), default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        _child(args)
        return {}

    # Both modes stay alive and time their blocks in turn (A B A B ...), so a change in machine
    # load during the run hits both alike.
    children = {}
    for mode in ("default", "deterministic"):
        cmd = [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--size", str(args.size),
               "--batch", str(args.batch)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        children[mode] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True, env=env)
    results = {mode: {"mode": mode, "s_per_step_repeats": []} for mode in children}
    for mode, child in children.items():
        results[mode].update(json.loads(child.stdout.readline()))
    for _ in range(args.repeats):
        for mode, child in children.items():
            child.stdin.write("time\n")
            child.stdin.flush()
            results[mode]["s_per_step_repeats"].append(
                json.loads(child.stdout.readline())["s_per_step"])
    for child in children.values():
        child.stdin.write("quit\n")
        child.stdin.flush()
        child.wait()
    for result in results.values():
        result["median_s_per_step"] = statistics.median(result["s_per_step_repeats"])
    default = results["default"]["median_s_per_step"]
    deterministic = results["deterministic"]["median_s_per_step"]
    summary = {
        "config": {"model": "vgg16 U-Net, default decoder, random encoder, float32",
                   "input": f"{args.batch}x{args.size}x{args.size}x3", "steps": args.steps,
                   "repeats": args.repeats, "warmup": args.warmup},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1m": os.getloadavg()[0]},
        "default_s_per_step": default,
        "deterministic_s_per_step": deterministic,
        "slowdown": deterministic / default,
        "runs": results,
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
