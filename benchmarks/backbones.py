"""One representative per backbone family: the default U-Net's cost and speed, side by side.

For vgg16, resnet50, resnet50v2, densenet121, mobilenetv2, mobilenetv3large, efficientnetb0,
efficientnetv2b0, convnexttiny, xception and inceptionv3: `build_vgg_unet(backbone=NAME,
weights=None, input_shape=(224, 224, 3), num_classes=2)` (defaults otherwise, so precision
"auto"), each in its own subprocess (memory isolated), one after another in the same run:
parameters, forward GFLOPs per image (throughput.py's `layer_flops`), training img/s (compiled
train step, Adam, sparse cross-entropy, batch 8, random batch; median of the timed steps after
warm-up), inference img/s (`predict_on_batch`, batch 8) and peak RSS; each also as a ratio to
vgg16, the default backbone. Usage (from the repository root, after `make install`):

    .venv/bin/python benchmarks/backbones.py            # full run (~15-25 min, 2 cores)
    .venv/bin/python benchmarks/backbones.py --quick    # 96², 1 warm-up + 2 steps, smoke run
    .venv/bin/python benchmarks/backbones.py --only vgg16,xception --steps 3

Raw figures go to `benchmarks/results/backbones.json` (`backbones_quick.json` for --quick). Only
a full run of every backbone (no --quick, no --only) writes the section "## Backbones (issue 16)"
of BENCHMARKS.md; its closing sentences are written by this script from the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import (  # noqa: E402
    REPO,
    RESULTS,
    compile_for_bench,
    forward_flops,
    machine,
    peak_rss_mib,
    random_batch,
    run_job,
    time_calls,
)
from throughput_report import write_section  # noqa: E402

SECTION = "## Backbones (issue 16)"
BACKBONES = ("vgg16", "resnet50", "resnet50v2", "densenet121", "mobilenetv2", "mobilenetv3large",
             "efficientnetb0", "efficientnetv2b0", "convnexttiny", "xception", "inceptionv3")
REFERENCE = "vgg16"
BATCH = 8
# Figures compared to vgg16: (result key, table header).
RATIOED = (("params", "params"), ("forward_gflops_per_image", "GFLOPs / {size}² image"),
           ("train_img_s", "train img/s"), ("infer_img_s", "infer img/s"),
           ("peak_rss_mib", "peak RSS"))


def measure_backbone(name: str, size: int, warmup: int, steps: int) -> dict[str, Any]:
    """Builds one backbone's default U-Net and times training and inference on a random batch.

    Args:
        name: a registry key (`vggunet.ENCODERS`).
        size: input height and width.
        warmup: untimed calls before the timed ones (the first one traces).
        steps: timed calls; the median counts.

    Returns:
        Parameters, forward GFLOPs per image, img/s and step seconds, peak RSS (MiB), policy.
    """
    from vggunet import build_vgg_unet

    base_rss = peak_rss_mib()
    start = time.perf_counter()
    model = build_vgg_unet(backbone=name, weights=None, input_shape=(size, size, 3),
                           num_classes=2)
    build_s = time.perf_counter() - start
    x, y = random_batch(size, BATCH)
    compile_for_bench(model, jit=False)
    train = time_calls(lambda: model.train_on_batch(x, y), warmup, steps)
    train_rss = peak_rss_mib()
    infer = time_calls(lambda: model.predict_on_batch(x), warmup, steps)
    return {
        "name": name, "size": size, "batch": BATCH, "warmup": warmup, "steps": steps,
        "params": int(model.count_params()),
        "forward_gflops_per_image": forward_flops(model) / 1e9,
        "policy": model.get_layer("bottleneck_conv1").dtype_policy.name,
        "build_s": build_s,
        "train_step_s": statistics.median(train), "train_step_all_s": train,
        "train_img_s": BATCH / statistics.median(train),
        "infer_step_s": statistics.median(infer), "infer_step_all_s": infer,
        "infer_img_s": BATCH / statistics.median(infer),
        "peak_rss_train_mib": train_rss, "peak_rss_mib": peak_rss_mib(),
        "rss_before_build_mib": base_rss,
    }


def add_ratios(results: dict[str, dict[str, Any]]) -> None:
    """Adds `<figure>_x_vgg16` (this backbone's figure / vgg16's) to every measured result.

    Args:
        results: backbone name → figures, changed in place; without a vgg16 result no ratios.

    Returns:
        None.
    """
    ref = results.get(REFERENCE, {})
    for row in results.values():
        for key, _ in RATIOED:
            if key in row and ref.get(key):
                row[f"{key}_x_{REFERENCE}"] = row[key] / ref[key]


def _cell(row: dict[str, Any], key: str, text: str) -> str:
    ratio = row.get(f"{key}_x_{REFERENCE}")
    return text if ratio is None else f"{text} ({ratio:.2f}×)"


def table(results: dict[str, dict[str, Any]], size: int) -> list[str]:
    """The markdown table: one line per backbone, each figure with its ratio to vgg16.

    Args:
        results: backbone name → figures (with ratios from `add_ratios`).
        size: the input's height and width, for the GFLOPs header.

    Returns:
        The table's lines.
    """
    lines = ["| backbone | policy | " + " | ".join(h.format(size=size) for _, h in RATIOED) + " |",
             "|---|---|" + "---:|" * len(RATIOED)]
    for name, row in results.items():
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error'][:160]} |" + "|" * len(RATIOED))
            continue
        texts = (f"{row['params'] / 1e6:.1f} M", f"{row['forward_gflops_per_image']:.1f}",
                 f"{row['train_img_s']:.2f}", f"{row['infer_img_s']:.2f}",
                 f"{row['peak_rss_mib'] / 1024:.2f} GiB")
        cells = [_cell(row, key, text) for (key, _), text in zip(RATIOED, texts)]
        lines.append(f"| {name} | {row['policy']} | " + " | ".join(cells) + " |")
    return lines


def findings(results: dict[str, dict[str, Any]]) -> list[str]:
    """Sentences that say what the figures show, computed from them (extremes and spreads).

    Args:
        results: backbone name → figures (with ratios from `add_ratios`).

    Returns:
        Up to five sentences; none when fewer than two backbones were measured.
    """
    ok = {n: r for n, r in results.items() if "error" not in r}
    if len(ok) < 2:
        return []

    def ends(key: str) -> tuple[str, str]:
        ranked = sorted(ok, key=lambda n: ok[n][key])
        return ranked[0], ranked[-1]

    def x(name: str, key: str) -> str:
        ratio = ok[name].get(f"{key}_x_{REFERENCE}")
        return "" if ratio is None else f", {ratio:.2f}× {REFERENCE}"

    out = []
    lo, hi = ends("params")
    out.append(f"Parameters range from {ok[lo]['params'] / 1e6:.1f} M ({lo}{x(lo, 'params')}) "
               f"to {ok[hi]['params'] / 1e6:.1f} M ({hi}{x(hi, 'params')}).")
    lo, hi = ends("forward_gflops_per_image")
    out.append(f"Forward cost ranges from {ok[lo]['forward_gflops_per_image']:.1f} GFLOPs per "
               f"image ({lo}) to {ok[hi]['forward_gflops_per_image']:.1f} ({hi}).")
    for key, verb in (("train_img_s", "Training"), ("infer_img_s", "Inference")):
        slow, fast = ends(key)
        out.append(f"{verb} is fastest with {fast} ({ok[fast][key]:.2f} img/s{x(fast, key)}) "
                   f"and slowest with {slow} ({ok[slow][key]:.2f} img/s{x(slow, key)}).")
    # Achieved GFLOP/s (training ≈ 3 × forward): how well each family's layers use the CPU,
    # i.e. how far the FLOP count alone predicts speed.
    rate = {n: 3 * r["forward_gflops_per_image"] * r["train_img_s"] for n, r in ok.items()}
    lo, hi = min(rate, key=rate.get), max(rate, key=rate.get)
    out.append(f"GFLOPs predict speed only in part: training runs at {rate[hi]:.0f} GFLOP/s "
               f"with {hi} but {rate[lo]:.0f} GFLOP/s with {lo} (3 × forward FLOPs × img/s).")
    return out


def markdown(report: dict[str, Any]) -> str:
    """The BENCHMARKS.md section of a run: set-up, machine, command, date, table, findings.

    Args:
        report: as written to the JSON file.

    Returns:
        The section, starting with its heading.
    """
    m, size = report["machine"], report["size"]
    lines = [SECTION, "",
             f"Measured {report['date']} with `{report['command']}` ({report['wall_s'] / 60:.0f} "
             f"min; load average {report['loadavg_start']} at start, {report['loadavg_end']} at "
             f"end) on {m['cpu']} ({m['cores']} cores), TensorFlow {m['versions']['tensorflow']}, "
             f"Keras {m['versions']['keras']}, Python {m['python']}. The default U-Net of each "
             f"backbone (`build_vgg_unet(backbone=NAME, weights=None, input_shape=({size}, "
             f"{size}, 3), num_classes=2)`, precision \"auto\"), each in its own process: "
             f"batch {BATCH}, random batch, Adam + sparse cross-entropy, medians of "
             f"{report['steps']} timed step(s) after {report['warmup']} warm-up step(s); inference "
             "with `predict_on_batch`. GFLOPs: forward, per image, 2 × the multiply-adds of the "
             "convolution and Dense layers. Peak RSS: the process's, build to last inference. "
             f"In brackets: the ratio to {REFERENCE}, the default backbone.", ""]
    lines += table(report["results"], size)
    sentences = findings(report["results"])
    if sentences:
        lines += ["", "What the figures say (sentences written by `benchmarks/backbones.py` "
                  "from the figures): " + " ".join(sentences)]
    lines += ["", "No GPU machine was lent to this issue, so there are no GPU figures. The "
              "README's backbone table (all 40 entries: parameters and GFLOPs) comes from "
              "`benchmarks/backbone_table.py`."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: --quick, --only, --steps, --warmup (and the internal --worker).

    Args:
        argv: arguments; None for `sys.argv[1:]`.

    Returns:
        The parsed arguments, with `size`, `steps` and `warmup` resolved and `only` a tuple.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="96² input, 1 warm-up + 2 timed steps; does not touch BENCHMARKS.md")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated backbones, of: {', '.join(BACKBONES)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5; quick 2)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default 2; quick 1)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = 96 if args.quick else 224
    args.steps = args.steps if args.steps is not None else (2 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.steps < 1 or args.warmup < 1:
        parser.error(f"--steps and --warmup must be ≥ 1 (the first call traces), got "
                     f"--steps {args.steps} --warmup {args.warmup}")
    args.only = tuple(n.strip().lower() for n in args.only.split(",")) if args.only else BACKBONES
    unknown = [n for n in args.only if n not in BACKBONES]
    if unknown:
        parser.error(f"--only: unknown backbone(s) {', '.join(unknown)}; "
                     f"choose from {', '.join(BACKBONES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (or, with --worker, one backbone's measurement).

    Args:
        argv: command-line arguments; None for `sys.argv[1:]`.

    Returns:
        0.
    """
    args = parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        result = measure_backbone(job["name"], job["size"], job["warmup"], job["steps"])
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    command = " ".join(["python benchmarks/backbones.py",
                        *(argv if argv is not None else sys.argv[1:])])
    report: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "machine": machine(), "command": command,
        "size": args.size, "batch": BATCH, "warmup": args.warmup, "steps": args.steps,
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()), "results": {},
    }
    t0 = time.perf_counter()
    for name in args.only:
        job = {"name": name, "size": args.size, "warmup": args.warmup, "steps": args.steps}
        result = run_job(job, 300 if args.quick else 900, script=__file__)
        report["results"][name] = result
        brief = result.get("error") or (
            f"{result['params']:,} params, {result['forward_gflops_per_image']:.1f} GFLOPs, "
            f"train {result['train_img_s']:.2f} img/s, infer {result['infer_img_s']:.2f} img/s, "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB, {result['process_wall_s']:.0f} s")
        print(f"[{time.perf_counter() - t0:6.0f} s] {name}: {brief}", flush=True)
    report["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    report["wall_s"] = time.perf_counter() - t0
    add_ratios(report["results"])
    out_path = RESULTS / ("backbones_quick.json" if args.quick else "backbones.json")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2))
    section = markdown(report)
    print("\n" + section)
    if not args.quick and args.only == BACKBONES:
        write_section(REPO / "BENCHMARKS.md", section, heading=SECTION)
        print(f"Updated BENCHMARKS.md; raw figures in {out_path.relative_to(REPO)}")
    else:
        print(f"BENCHMARKS.md untouched (--quick or --only); raw figures in "
              f"{out_path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
