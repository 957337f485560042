"""3D U-Net speed on CPU: the lab's depth-4 model against MONAI's UNet and BasicUNet (issue 15).

Times the training step and the inference throughput (voxels/s) of `build_unet_3d(preset=
"assignment")` (depth 4, 32 base filters, 16,318,307 parameters) on 160×160×16 patches with 4
channels and 3 sigmoid classes, in both data formats and in float32 and `precision="auto"`
(mixed_bfloat16 as well when "auto" resolves to float32), and side by side MONAI's `UNet` and
`BasicUNet` on CPU torch, configured as closely as they allow to the same network (`MONAI`
below says what differs). Then the sliding-window prediction of a whole 240×240×155×4 scan with
`vggunet.inference.volume.predict_volume`, when that module exists. Usage, from the repository
root (`pip install -e ".[bench]"` brings torch and MONAI):

    .venv/bin/python benchmarks/volumes.py             # full run (~8 min on an idle 2-core CPU)
    .venv/bin/python benchmarks/volumes.py --quick     # 64×64×16 patches, fewer steps, no scan

Each measurement runs in its own process (peak RSS per model, no allocator carry-over), one
after another; warm-up steps are not timed and the medians of the timed steps are reported. The
load average before and after each job is recorded: on a shared machine the figures are what
the process got, not what the CPU can do. Results: `benchmarks/results/volumes.json`
(`volumes_quick.json` for --quick), and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import machine, peak_rss_mib, run_job, time_calls  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PATCH, QUICK_PATCH = (160, 160, 16), (64, 64, 16)
CHANNELS, CLASSES = 4, 3
SCAN = (240, 240, 155, CHANNELS)
KERAS_FORMATS = ("channels_first", "channels_last")
KERAS_PRECISIONS = ("float32", "auto")

# Both MONAI nets keep the lab's channels per resolution (64 at full size, 128, 256, 512 at /8),
# ReLU, no normalisation, 3 output channels (logits; the sigmoid is applied after).
MONAI = {
    "monai_unet": {
        "kwargs": dict(channels=(64, 128, 256, 512, 512), strides=(1, 2, 2, 2), num_res_units=2,
                       act="RELU", norm=None),
        "differs": "residual units (2 convs + a projection conv on the shortcut) per encoder "
                   "level; strided convs instead of max pooling; decoder: one transposed 3×3×3 "
                   "conv + one conv per level instead of UpSampling3D + 2 convs; an extra "
                   "512→512 bottom unit at /8; the head is the top transposed conv",
    },
    "monai_basicunet": {
        "kwargs": dict(features=(64, 128, 256, 512, 512, 64), act="RELU", norm=None,
                       upsample="deconv"),
        "differs": "both convs of an encoder level have the level's width (64, 64 where the "
                   "lab has 32, 64); a fifth level at /16 (512 channels) it cannot drop; "
                   "learned 2×2×2 transposed-conv upsampling (halving channels) instead of "
                   "nearest UpSampling3D; decoder convs and head as the lab's",
    },
}


# --------------------------------------------------------------------------------------------
# Measuring (inside a worker process)
# --------------------------------------------------------------------------------------------
def random_patch_batch(batch: int, patch: tuple[int, ...], channels_first: bool) -> tuple[Any, Any]:
    """Normal images and 0/1 multi-label targets (seeded), in the requested layout."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *patch, CHANNELS)).astype("float32")
    y = (rng.random((batch, *patch, CLASSES)) < 0.3).astype("float32")
    if channels_first:
        x, y = np.moveaxis(x, -1, 1).copy(), np.moveaxis(y, -1, 1).copy()
    return x, y


def figures(batch: int, patch: tuple[int, ...], train: list[float], infer: list[float]) -> dict:
    """Medians and voxel rates from the timed seconds."""
    voxels = batch * math.prod(patch)
    return {"train_step_s": statistics.median(train), "train_step_all_s": train,
            "train_voxels_s": voxels / statistics.median(train),
            "infer_step_s": statistics.median(infer), "infer_step_all_s": infer,
            "infer_voxels_s": voxels / statistics.median(infer)}


def measure_keras(job: dict[str, Any]) -> dict[str, Any]:
    """The lab's depth-4 U-Net (Keras, TensorFlow backend) in one data format and precision."""
    import keras

    from vggunet.models.unet3d import build_unet_3d

    patch, batch, fmt = tuple(job["patch"]), job["batch"], job["data_format"]
    first = fmt == "channels_first"
    shape = (CHANNELS, *patch) if first else (*patch, CHANNELS)
    model = build_unet_3d(shape, preset="assignment", n_classes=CLASSES, data_format=fmt,
                          precision=job["precision"])
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy",
                  jit_compile=False)
    x, y = random_patch_batch(batch, patch, first)
    train = time_calls(lambda: model.train_on_batch(x, y), job["warmup"], job["steps"])
    train_rss = peak_rss_mib()
    infer = time_calls(lambda: model.predict_on_batch(x), job["warmup"], job["steps"])
    return {"params": int(model.count_params()),
            "policy": model.get_layer("bottleneck_conv1").dtype_policy.name,
            **figures(batch, patch, train, infer),
            "peak_rss_train_mib": train_rss, "peak_rss_mib": peak_rss_mib()}


def measure_monai(job: dict[str, Any]) -> dict[str, Any]:
    """One MONAI network on CPU torch (`torch.set_num_threads(job["threads"])`), float32."""
    import monai
    import torch
    from monai.networks.nets import BasicUNet, UNet

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    cls = UNet if job["name"] == "monai_unet" else BasicUNet
    net = cls(spatial_dims=3, in_channels=CHANNELS, out_channels=CLASSES,
              **MONAI[job["name"]]["kwargs"])
    patch, batch = tuple(job["patch"]), job["batch"]
    x, y = (torch.from_numpy(a) for a in random_patch_batch(batch, patch, True))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()  # = the lab's sigmoid + binary cross-entropy

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.inference_mode():
            torch.sigmoid(net(x))

    net.train()
    train = time_calls(train_step, job["warmup"], job["steps"])
    train_rss = peak_rss_mib()
    net.eval()
    infer = time_calls(infer_step, job["warmup"], job["steps"])
    return {"params": int(sum(p.numel() for p in net.parameters())), "policy": "float32",
            "torch": torch.__version__, "monai": monai.__version__,
            "torch_threads": torch.get_num_threads(), **figures(batch, patch, train, infer),
            "peak_rss_train_mib": train_rss, "peak_rss_mib": peak_rss_mib()}


def measure_scan(job: dict[str, Any]) -> dict[str, Any]:
    """Seconds for `predict_volume` on a whole random scan (the lab's model, `job`'s format)."""
    try:
        from vggunet.inference.volume import predict_volume
    except ImportError as exc:
        return {"available": False, "error": f"predict_volume not available ({exc})"}
    import numpy as np

    from vggunet.models.unet3d import build_unet_3d

    fmt, patch = job["data_format"], tuple(job["patch"])
    shape = (CHANNELS, *patch) if fmt == "channels_first" else (*patch, CHANNELS)
    model = build_unet_3d(shape, preset="assignment", n_classes=CLASSES, data_format=fmt,
                          precision=job["precision"])
    model.predict_on_batch(random_patch_batch(job["batch_size"], patch,
                                              fmt == "channels_first")[0])  # trace once
    scan = np.random.default_rng(0).standard_normal(tuple(job["scan"])).astype("float32")
    start = time.perf_counter()
    proba = predict_volume(model, scan, overlap=job["overlap"], batch_size=job["batch_size"])
    seconds = time.perf_counter() - start
    if tuple(proba.shape) != (*job["scan"][:3], CLASSES):
        return {"available": True, "error": f"output shape {proba.shape}"}
    return {"available": True, "seconds": seconds,
            "voxels_s": math.prod(job["scan"][:3]) / seconds,
            "windows": windows(job["scan"][:3], patch, job["overlap"]),
            "policy": model.get_layer("bottleneck_conv1").dtype_policy.name,
            "peak_rss_mib": peak_rss_mib()}


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """Runs one job, recording the load average around it."""
    load_before = os.getloadavg()
    kind = job["kind"]
    result = (measure_keras(job) if kind == "keras" else measure_monai(job) if kind == "monai"
              else measure_scan(job))
    return {**result, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------
def windows(size: tuple[int, ...], patch: tuple[int, ...], overlap: float) -> int:
    """Sliding windows over `size`: per axis, steps of patch·(1-overlap), the last window
    ending at the border (the contract of `predict_volume`)."""
    total = 1
    for n, p in zip(size, patch):
        step = max(1, int(p * (1 - overlap)))
        total *= 1 if n <= p else math.ceil((n - p) / step) + 1
    return total


def plan(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], float]]:
    """The jobs of a run: (key, job, timeout seconds)."""
    patch = list(QUICK_PATCH if args.quick else PATCH)
    timing = {"patch": patch, "warmup": args.warmup, "steps": args.steps}
    jobs: list[tuple[str, dict[str, Any], float]] = []
    for batch in args.batch:
        for fmt in KERAS_FORMATS:
            for precision in KERAS_PRECISIONS:
                jobs.append((f"keras_{fmt}_{precision}_b{batch}",
                             {"kind": "keras", "data_format": fmt, "precision": precision,
                              "batch": batch, **timing}, 1200))
        for name in MONAI:
            jobs.append((f"{name}_b{batch}", {"kind": "monai", "name": name, "batch": batch,
                                              "threads": args.torch_threads, **timing}, 1200))
    if not args.quick and not args.no_scan:
        jobs.append(("scan", {"kind": "scan", "data_format": args.scan_format,
                              "precision": args.scan_precision, "patch": patch,
                              "scan": list(SCAN), "overlap": args.scan_overlap,
                              "batch_size": args.scan_batch}, 1800))
    if args.only:
        jobs = [j for j in jobs if any(part in j[0] for part in args.only)]
    return jobs


def bf16_jobs(results: dict[str, Any],
              jobs: list[tuple[str, dict[str, Any], float]]) -> list[tuple[str, dict, float]]:
    """mixed_bfloat16 twins of the "auto" jobs when "auto" resolved to float32 here."""
    extra = []
    for key, job, timeout in jobs:
        if job.get("precision") == "auto" and results.get(key, {}).get("policy") == "float32":
            extra.append((key.replace("_auto_", "_mixed_bfloat16_"),
                          {**job, "precision": "mixed_bfloat16"}, timeout))
    return extra


def fmt_number(value: float | None, spec: str) -> str:
    """A figure, or a dash when missing."""
    return "—" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    """The run's table: one row per model configuration, then the scan."""
    results, scan_windows = report["results"], report["scan_windows"]
    lines = ["| model | batch | data format | policy | params | train s/step | train "
             "Mvox/s | infer s/step | infer Mvox/s | est. scan s | peak RSS MiB | load |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key, row in results.items():
        if key == "scan":
            continue
        job = row["job"]
        label = ("lab depth 4 (Keras)" if job["kind"] == "keras" else
                 f"MONAI {'UNet' if job['name'] == 'monai_unet' else 'BasicUNet'} (torch)")
        if "error" in row:
            lines.append(f"| {label} | {job['batch']} | failed: {row['error'][:100]} |||||||||")
            continue
        # One patch per window at batch 1: the scan estimate from the inference step.
        estimate = row["infer_step_s"] * scan_windows / job["batch"]
        load = f"{row['loadavg_before'][0]:.1f}→{row['loadavg_after'][0]:.1f}"
        lines.append(
            f"| {label} | {job['batch']} | {job.get('data_format', 'channels_first')} | "
            f"{row['policy']} | {row['params']:,} | {row['train_step_s']:.2f} | "
            f"{row['train_voxels_s'] / 1e6:.3f} | {row['infer_step_s']:.2f} | "
            f"{row['infer_voxels_s'] / 1e6:.3f} | {estimate:.0f} | "
            f"{row['peak_rss_mib']:.0f} | {load} |")
    scan = results.get("scan")
    if scan is not None:
        job = scan["job"]
        lines += ["", f"Whole scan {'×'.join(map(str, job['scan']))} with `predict_volume` "
                  f"({job['data_format']}, precision {job['precision']}, overlap "
                  f"{job['overlap']}, batch {job['batch_size']}): " +
                  (scan.get("error") or f"{scan['seconds']:.0f} s ({scan['windows']} windows, "
                   f"{scan['voxels_s'] / 1e6:.2f} Mvox/s, peak RSS "
                   f"{scan['peak_rss_mib']:.0f} MiB)")]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="64×64×16 patches, 2 timed steps, no whole-scan prediction")
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps (median reported; default 3, --quick 2)")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--no-scan", action="store_true", help="skip the whole-scan prediction")
    parser.add_argument("--scan-overlap", type=float, default=0.5)
    parser.add_argument("--scan-batch", type=int, default=2)
    parser.add_argument("--scan-format", choices=KERAS_FORMATS, default="channels_last")
    parser.add_argument("--scan-precision", default="auto")
    parser.add_argument("--only", nargs="+", help="run the jobs whose key contains one of these")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 2 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (or, with --worker, one job)."""
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    from vggunet.fileio import write_json_atomic

    out_path = RESULTS / ("volumes_quick.json" if args.quick else "volumes.json")
    previous = (json.loads(out_path.read_text()).get("results", {})
                if args.only and out_path.exists() else {})
    patch = QUICK_PATCH if args.quick else PATCH
    info = machine()
    for pkg in ("torch", "monai"):
        info["versions"][pkg] = _version(pkg)
    report: dict[str, Any] = {
        "command": " ".join(["benchmarks/volumes.py", *(argv if argv is not None
                                                         else sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": info, "loadavg_start": os.getloadavg(), "patch": list(patch),
        "channels": CHANNELS, "classes": CLASSES,
        "scan_windows": windows(SCAN[:3], patch, args.scan_overlap),
        "monai_differences": {k: v["differs"] for k, v in MONAI.items()},
        "results": dict(previous),
    }
    jobs = plan(args)
    queue = list(jobs)
    while queue:
        key, job, timeout = queue.pop(0)
        start = time.perf_counter()
        report["results"][key] = run_job(job, timeout, script=__file__)
        print(f"{key}: {time.perf_counter() - start:.0f} s "
              f"{report['results'][key].get('error', '')}", flush=True)
        if not queue:
            queue = bf16_jobs(report["results"], jobs)
            jobs = []
        # Written after every job: a long run stopped midway keeps what it measured.
        report["loadavg_end"] = os.getloadavg()
        write_json_atomic(report, out_path)
    print("\n" + markdown(report))
    return 0


def _version(package: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
