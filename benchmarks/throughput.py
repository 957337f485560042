"""Training and inference throughput: vggunet against segmentation_models and keras-unet-collection.

One command measures every contender in its own subprocess (memory isolated), on the same random
batch (224×224×3, batch 8, 2 classes, `weights=None`), plus the machine's convolution limit, the
frozen-encoder step, `jit_compile`, the tf.data pipeline, tiled prediction at 1024²…4096² and
training at 448². Usage (from the repository root, after `make install`):

    .venv/bin/python benchmarks/throughput.py            # full run, updates BENCHMARKS.md
    .venv/bin/python benchmarks/throughput.py --quick    # 128², fewer steps, < 3 minutes

Raw figures go to `benchmarks/results/throughput.json` (`throughput_quick.json` for --quick);
`throughput_report.py` turns them into BENCHMARKS.md's section.
Contenders need the `bench` extra: `pip install -e ".[bench]"`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ISBI = REPO.parent / "shared" / "data" / "isbi2012"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput_report import (  # noqa: E402
    CONTENDERS, EXTRAS, markdown, summarize, write_section,
)


# --------------------------------------------------------------------------------------------
# Measuring (runs inside a worker subprocess)
# --------------------------------------------------------------------------------------------
def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_calls(fn: Callable[[], Any], warmup: int, steps: int) -> list[float]:
    """Calls `fn` `warmup` times untimed, then `steps` times; returns the timed seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def layer_flops(layer: Any) -> float:
    """Forward FLOPs (2 × multiply-adds) of one convolution or Dense layer, per image.

    The one FLOP count of the benchmarks (backbone_table.py, backbones.py, profile_step.py).
    Conv2D (grouped too), Conv2DTranspose, DepthwiseConv2D, SeparableConv2D; a Dense layer on
    a feature map (as in ConvNeXt) counts once per pixel. Shapes are the layer's static ones,
    so the model must have a fixed input size.

    Args:
        layer: a layer of a model with static shapes.

    Returns:
        The FLOPs; 0 for any other kind of layer.
    """
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.DepthwiseConv2D,
             keras.layers.SeparableConv2D, keras.layers.Dense)
    if not isinstance(layer, kinds):
        return 0.0
    c_in = int(layer.input.shape[-1])
    out_pixels = math.prod(int(d) for d in layer.output.shape[1:-1])
    if isinstance(layer, keras.layers.Dense):
        return 2.0 * out_pixels * c_in * layer.units
    window = math.prod(layer.kernel_size)
    if isinstance(layer, keras.layers.Conv2DTranspose):  # every input pixel feeds a window
        in_pixels = math.prod(int(d) for d in layer.input.shape[1:-1])
        return 2.0 * in_pixels * c_in * window * layer.filters
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return 2.0 * out_pixels * c_in * layer.depth_multiplier * window
    if isinstance(layer, keras.layers.SeparableConv2D):  # depthwise, then pointwise
        depthwise = c_in * layer.depth_multiplier
        return 2.0 * out_pixels * depthwise * (window + layer.filters)
    return 2.0 * out_pixels * window * c_in // layer.groups * layer.filters


def forward_flops(model: Any) -> float:
    """Forward FLOPs per image of the model's convolution and Dense layers (`layer_flops`).

    Nested models (a backbone used as a layer) are counted through their own layers.
    Element-wise layers (BatchNorm, activations, pooling, concat) are left out: they are a few
    percent of the work and not what the convolution peak measures.
    """
    from vggunet.inspect import all_layers

    return sum(layer_flops(layer) for layer in all_layers(model))


def build_contender(name: str, size: int) -> Any:
    """Builds one contender for a `size`×`size`×3 input, 2 classes, no pretrained weights."""
    if name in ("sm",):
        os.environ["SM_FRAMEWORK"] = "tf.keras"
        import segmentation_models as sm

        return sm.Unet("vgg16", input_shape=(size, size, 3), encoder_weights=None, classes=2,
                       activation="softmax")
    if name == "kuc":
        from keras_unet_collection import models

        return models.unet_2d((size, size, 3), [64, 128, 256, 512, 1024], n_labels=2,
                              backbone="VGG16", weights=None, output_activation="Softmax")
    from vggunet import build_vgg_unet

    kwargs: dict[str, Any] = {}
    if name.startswith("vggunet_fp32"):
        kwargs["precision"] = "float32"
    if name.startswith("vggunet_matched"):
        kwargs["decoder_filters"] = (256, 128, 64, 32, 16)
    return build_vgg_unet("vgg16", input_shape=(size, size, 3), num_classes=2, weights=None,
                          **kwargs)


def random_batch(size: int, batch: int) -> tuple[Any, Any]:
    """The shared input: raw pixels in [0, 255] and 0/1 labels, seeded identically everywhere."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 2, (batch, size, size)).astype("int32")
    return x, y


def compile_for_bench(model: Any, jit: bool) -> None:
    """The same optimizer and loss for every contender (Adam, sparse cross-entropy, no metrics)."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(), jit_compile=jit)


def measure_model(name: str, size: int, batch: int, warmup: int, steps: int,
                  frozen: bool) -> dict[str, Any]:
    """Training and inference img/s, forward GFLOPs and peak RSS of one contender."""
    import keras

    base_rss = peak_rss_mib()
    model = build_contender(name, size)
    flops = forward_flops(model)
    x, y = random_batch(size, batch)
    jit = name.endswith("_jit")
    compile_for_bench(model, jit)
    probe_before = conv_probe_gflop_s()
    train = time_calls(lambda: model.train_on_batch(x, y), warmup, steps)
    train_rss = peak_rss_mib()
    infer = time_calls(lambda: model.predict_on_batch(x), warmup, steps)
    probe_after = conv_probe_gflop_s()
    out: dict[str, Any] = {
        "name": name, "size": size, "batch": batch, "jit_compile": jit,
        "params": int(model.count_params()),
        "policy": keras.config.dtype_policy().name if not name.startswith("vggunet")
        else model.get_layer("bottleneck_conv1").dtype_policy.name,
        "forward_gflops_per_image": flops / 1e9,
        "train_step_s": statistics.median(train), "train_step_all_s": train,
        "train_img_s": batch / statistics.median(train),
        "infer_step_s": statistics.median(infer), "infer_step_all_s": infer,
        "infer_img_s": batch / statistics.median(infer),
        "peak_rss_train_mib": train_rss, "rss_before_build_mib": base_rss,
        "probe_bf16_gflop_s": [probe_before, probe_after],
    }
    # Training does the forward pass and two backward products per conv (input and kernel
    # gradients): 3 × forward is the usual count, slightly high for the first conv.
    out["train_gflop_s"] = 3 * out["forward_gflops_per_image"] * out["train_img_s"]
    out["infer_gflop_s"] = out["forward_gflops_per_image"] * out["infer_img_s"]
    probe = max(probe_before, probe_after)
    out["train_efficiency_vs_probe"] = out["train_gflop_s"] / probe
    out["infer_efficiency_vs_probe"] = out["infer_gflop_s"] / probe
    if frozen:
        from vggunet.freezing import freeze

        freeze(model, "encoder")
        compile_for_bench(model, jit)
        frozen_t = time_calls(lambda: model.train_on_batch(x, y), warmup, steps)
        out["frozen_train_step_s"] = statistics.median(frozen_t)
        out["frozen_train_step_all_s"] = frozen_t
        out["frozen_over_trainable"] = out["frozen_train_step_s"] / out["train_step_s"]
    return out


def conv_probe_gflop_s(steps: int = 3) -> float:
    """GFLOP/s of one large bfloat16 3×3 convolution (8×56×56, 256→256), now, in this process.

    Taken right before and after a contender's timing, it tells what the machine gave this
    process at that moment: on a shared machine the run-level peak may come from a quieter
    minute than the contender's.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    layer = keras.layers.Conv2D(256, 3, padding="same", dtype="bfloat16")
    x = tf.constant(np.random.default_rng(0).standard_normal((8, 56, 56, 256)), "bfloat16")
    layer.build(x.shape)
    fn = tf.function(lambda t: layer(t))
    times = time_calls(lambda: fn(x).numpy(), 1, steps)
    return 2.0 * 8 * 56 * 56 * 9 * 256 * 256 / statistics.median(times) / 1e9


def measure_conv_peak(steps: int) -> dict[str, Any]:
    """GFLOP/s of large 3×3 convolutions (Keras Conv2D, forward) in float32 and bfloat16."""
    import keras
    import numpy as np
    import tensorflow as tf

    shapes = [(8, 56, 56, 256, 256), (8, 28, 28, 512, 512), (8, 112, 112, 128, 128),
              (8, 224, 224, 64, 64)]
    result: dict[str, Any] = {"shapes": {}}
    for dtype in ("float32", "bfloat16"):
        best = 0.0
        for b, h, w, c_in, c_out in shapes:
            layer = keras.layers.Conv2D(c_out, 3, padding="same", dtype=dtype)
            x = tf.constant(np.random.default_rng(0).standard_normal((b, h, w, c_in)), dtype)
            layer.build(x.shape)
            fn = tf.function(lambda t: layer(t))
            times = time_calls(lambda: fn(x).numpy(), 2, steps)
            gflop_s = 2.0 * b * h * w * 9 * c_in * c_out / statistics.median(times) / 1e9
            result["shapes"][f"{dtype} {b}x{h}x{w} {c_in}->{c_out}"] = gflop_s
            best = max(best, gflop_s)
        result[f"peak_{dtype}_gflop_s"] = best
    return result


def measure_tiled(side: int, tile: int, overlap: int) -> dict[str, Any]:
    """Seconds per megapixel and peak RSS of `predict_tiled` (default model) on a side² image."""
    import numpy as np

    from vggunet import build_vgg_unet, predict_tiled

    model = build_vgg_unet("vgg16", num_classes=2, weights=None)
    # Two differently tiled warm-up images: Keras traces `predict_on_batch` per shape, and after
    # the second shape traces one shape-generic function, so the timed call does not trace.
    for side_warm in (600, 1000):
        warm = np.random.default_rng(1).uniform(0, 255, (side_warm, side_warm, 3))
        predict_tiled(model, warm.astype("float32"), tile=tile, overlap=overlap)
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype="uint8")
    start = time.perf_counter()
    proba = predict_tiled(model, image, tile=tile, overlap=overlap)
    seconds = time.perf_counter() - start
    assert proba.shape == (side, side, 2)
    mpix = side * side / 1e6
    return {"side": side, "tile": tile, "overlap": overlap, "seconds": seconds,
            "s_per_mpix": seconds / mpix, "peak_rss_mib": peak_rss_mib()}


def measure_train_size(size: int, batch: int, warmup: int, steps: int) -> dict[str, Any]:
    """Training seconds per image and per megapixel of the default model at `size`²."""
    import keras  # noqa: F401

    model = build_contender("vggunet", size)
    x, y = random_batch(size, batch)
    compile_for_bench(model, False)
    times = time_calls(lambda: model.train_on_batch(x, y), warmup, steps)
    per_image = statistics.median(times) / batch
    return {"size": size, "batch": batch, "s_per_image": per_image,
            "s_per_mpix": per_image / (size * size / 1e6), "peak_rss_mib": peak_rss_mib()}


def measure_pipeline(size: int, batch: int, batches: int) -> dict[str, Any]:
    """Images per second of the ISBI tf.data pipeline alone (decode, crop, augment)."""
    from vggunet.data import find_pairs, make_dataset

    pairs = find_pairs(ISBI / "image", ISBI / "label")
    out: dict[str, Any] = {"size": size, "batch": batch}
    for label, augment in (("crop_flip", None), ("crop_flip_rot90_elastic", "rot90,elastic")):
        ds = make_dataset(pairs=pairs, num_classes=2, mask_format="binary", channels=3,
                          crop=(size, size), flip=True, augment=augment, batch_size=batch,
                          seed=0, repeat=True)
        it = iter(ds)
        next(it)
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        out[f"{label}_img_s"] = batches * batch / (time.perf_counter() - start)
    return out


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """Runs one measurement job (in a fresh process) and returns its figures."""
    kind = job["kind"]
    if kind == "model":
        return measure_model(job["name"], job["size"], job["batch"], job["warmup"], job["steps"],
                             job.get("frozen", False))
    if kind == "conv_peak":
        return measure_conv_peak(job["steps"])
    if kind == "tiled":
        return measure_tiled(job["side"], job["tile"], job["overlap"])
    if kind == "train_size":
        return measure_train_size(job["size"], job["batch"], job["warmup"], job["steps"])
    if kind == "pipeline":
        return measure_pipeline(job["size"], job["batch"], job["batches"])
    raise ValueError(f"unknown job kind {kind!r}")


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------
def run_job(job: dict[str, Any], timeout: float, script: str = __file__) -> dict[str, Any]:
    """Runs `job` in its own Python process (`script --worker JOB`, which prints `RESULT {...}`);
    returns its figures or an `error` entry."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, script, "--worker", json.dumps(job)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"job": job, "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"job": job, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    result = json.loads(lines[-1][len("RESULT "):])
    result["job"] = job
    result["process_wall_s"] = wall
    return result


def plan(quick: bool) -> list[tuple[str, dict[str, Any], float]]:
    """The jobs of a run: (key, job, timeout seconds)."""
    size = 128 if quick else 224
    steps, warmup = (3, 1) if quick else (7, 2)
    peak_job = {"kind": "conv_peak", "steps": 3 if quick else 7}
    jobs: list[tuple[str, dict[str, Any], float]] = [("conv_peak", peak_job, 300)]
    for name in CONTENDERS:
        jobs.append((name, {"kind": "model", "name": name, "size": size, "batch": 8,
                            "warmup": warmup, "steps": steps,
                            "frozen": name in ("vggunet", "vggunet_matched")}, 900))
    if quick:
        return jobs + [("conv_peak_end", peak_job, 300)]
    for name in EXTRAS:
        jobs.append((name, {"kind": "model", "name": name, "size": size, "batch": 8,
                            "warmup": warmup, "steps": steps}, 900))
    jobs.append(("pipeline", {"kind": "pipeline", "size": size, "batch": 8, "batches": 20}, 300))
    jobs.append(("train_448", {"kind": "train_size", "size": 448, "batch": 8, "warmup": warmup,
                               "steps": steps}, 900))
    for side in (1024, 2048, 4096):
        jobs.append((f"tiled_{side}", {"kind": "tiled", "side": side, "tile": 512,
                                       "overlap": 64}, 900))
    # The limit again at the end: the larger of the two is the peak, so a load spike during
    # one measurement does not inflate the efficiencies.
    return jobs + [("conv_peak_end", peak_job, 300)]


def machine() -> dict[str, Any]:
    """CPU model, core count, flags that matter, library versions."""
    info: dict[str, Any] = {"cpu": platform.processor() or "unknown", "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = set(text.split())
        info["bf16_flags"] = sorted(f for f in ("avx512_bf16", "amx_bf16", "avx512f") if f in flags)
    except OSError:
        pass
    import importlib.metadata as md

    info["versions"] = {}
    for pkg in ("tensorflow", "keras", "numpy", "segmentation-models", "keras-unet-collection"):
        try:
            info["versions"][pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info["versions"][pkg] = None
    info["python"] = platform.python_version()
    return info


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (or, with --worker, one job).

    Args:
        argv: command-line arguments (None: sys.argv).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="128² input, fewer steps, no scale jobs")
    parser.add_argument("--only", default=None, help="comma-separated job keys to run")
    parser.add_argument("--no-markdown", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    jobs = plan(args.quick)
    if args.only:
        keep = set(args.only.split(","))
        jobs = [j for j in jobs if j[0] in keep]
    out_path = RESULTS / ("throughput_quick.json" if args.quick else "throughput.json")
    before = json.loads(out_path.read_text()) if args.only and out_path.exists() else {}
    previous = before.get("results", {})
    report: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "machine": machine(),
        "command": "make bench" + ("-quick" if args.quick else "") if not args.only
        else f"benchmarks/throughput.py --only {args.only}",
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "results": dict(previous),
    }
    t0 = time.perf_counter()
    for key, job, timeout in jobs:
        result = run_job(job, timeout)
        report["results"][key] = result
        brief = result.get("error") or ", ".join(
            f"{k}={v:.3g}" for k, v in result.items()
            if isinstance(v, float)
            and k.endswith(("img_s", "gflop_s", "s_per_mpix", "over_trainable")))
        print(f"[{time.perf_counter() - t0:6.0f} s] {key}: {brief}", flush=True)
    report["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    report["wall_s"] = time.perf_counter() - t0
    # A partial rerun (--only) keeps the other jobs' figures: record which run measured what.
    runs = before.get("runs") or ([{k: before[k] for k in ("command", "date", "loadavg_start",
                                                            "loadavg_end")}
                                   | {"jobs": sorted(before.get("results", {}))}]
                                  if before else [])
    runs = [r | {"jobs": [j for j in r["jobs"] if j not in {key for key, _, _ in jobs}]}
            for r in runs]
    report["runs"] = [r for r in runs if r["jobs"]] + [
        {k: report[k] for k in ("command", "date", "loadavg_start", "loadavg_end")}
        | {"jobs": [key for key, _, _ in jobs]}]
    report["summary"] = summarize(report["results"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2))
    section = markdown(report)
    print("\n" + section)
    if not args.quick and not args.no_markdown:
        write_section(REPO / "BENCHMARKS.md", section)
        print(f"Updated BENCHMARKS.md; raw figures in {out_path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
