"""Where a training step's time goes: an op-level profile of one contender (issue 4).

Runs `train_on_batch` with throughput.py's setup (same model builders, random batch, Adam 1e-4,
sparse cross-entropy) under the TensorFlow profiler, reads the host trace (`*.xplane.pb`) and
splits the op time of the profiled steps into categories: convolution forward, input gradient
and kernel gradient (with the FLOPs of the layers they belong to, hence GFLOP/s against the
bfloat16 convolution probe taken in the same process), the other layers by class, the optimizer
update, and the rest. Self time is used, so nested events (function calls around ops) are not
counted twice; op time summed over threads can exceed the wall time when ops overlap.

Usage (from the repository root; each call profiles one contender in this process):
    .venv/bin/python benchmarks/profile_step.py --model vggunet
    .venv/bin/python benchmarks/profile_step.py --model vggunet --frozen
    .venv/bin/python benchmarks/profile_step.py --model sm
    .venv/bin/python benchmarks/profile_step.py --model vggunet --inter-op 1
Writes `benchmarks/results/profile_<model>_<size>[_frozen][_interopN].json` and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import (  # noqa: E402
    RESULTS,
    build_contender,
    compile_for_bench,
    conv_probe_gflop_s,
    layer_flops,
    random_batch,
)

CONV_CLASSES = ("Conv2D", "Conv2DTranspose")
OP_EVENT = re.compile(r"^([^:]+):([A-Za-z_][A-Za-z0-9_]*)$")  # "op_name:op_type"


def self_times(events: list[tuple[int, int, str]]) -> dict[str, int]:
    """Self time (duration minus nested children) per event name on one thread.

    Args:
        events: `(start_ps, duration_ps, name)` of one trace line; events nest properly.

    Returns:
        Picoseconds of self time per name.

    Example:
        >>> self_times([(0, 10, "call"), (2, 3, "a"), (6, 2, "b")])
        {'call': 5, 'a': 3, 'b': 2}
    """
    out: dict[str, int] = defaultdict(int)
    stack: list[list[Any]] = []  # open events: [end, name, duration, children's duration]
    for start, duration, name in sorted(events, key=lambda e: (e[0], -e[1])):
        while stack and stack[-1][0] <= start:
            _, done, total, children = stack.pop()
            out[done] += total - children
        if stack:
            stack[-1][3] += duration
        stack.append([start + duration, name, duration, 0])
    for _, done, total, children in stack:
        out[done] += total - children
    return dict(out)


def read_host_ops(logdir: Path) -> dict[str, int]:
    """Self time per TensorFlow op event (`"op_name:op_type"`) in the host trace of `logdir`.

    Args:
        logdir: the folder given to `tf.profiler.experimental.start`.

    Returns:
        Picoseconds per event name, summed over all threads of the host plane.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(logdir.rglob("*.xplane.pb"))
    if not files:
        raise FileNotFoundError(f"no *.xplane.pb under {logdir}: the profiler wrote no trace")
    space = xplane_pb2.XSpace()
    space.ParseFromString(files[-1].read_bytes())
    totals: dict[str, int] = defaultdict(int)
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            events = [(e.offset_ps, e.duration_ps, names.get(e.metadata_id, "?"))
                      for e in line.events]
            for name, ps in self_times(events).items():
                totals[name] += ps
    return dict(totals)


def layer_index(model: Any) -> dict[str, tuple[str, float]]:
    """Layer name -> (class name, forward FLOPs per image), nested models' layers included."""
    from vggunet.inspect import all_layers

    return {layer.name: (type(layer).__name__, layer_flops(layer))
            for layer in all_layers(model)}


def categorize(name: str, layers: dict[str, tuple[str, float]]) -> tuple[str, str | None]:
    """The category of one op event, and the layer it belongs to (if any).

    Args:
        name: `"op_name:op_type"` as traced.
        layers: from `layer_index`.

    Returns:
        `(category, layer_name)`.
    """
    match = OP_EVENT.match(name)
    if not match:  # executor / function-call events such as "KernelAndDeviceFunc::Run"
        return "runtime (not an op)", None
    op_name, op_type = match.groups()
    path = op_name.split("/")
    # Keras scopes a called layer as "<name>_<k>": match the name with and without the suffix.
    layer = next((c for p in reversed(path) for c in (p, re.sub(r"_\d+$", "", p))
                  if c in layers), None)
    backward = "gradient" in op_name.lower() or "Backprop" in op_type or "Grad" in op_type
    if "Backprop" in op_type and "Conv" in op_type:
        kind = "input" if "Input" in op_type else "kernel"
        return f"conv backward ({kind} gradient)", layer
    if layer is not None and layers[layer][0] in CONV_CLASSES and "Conv" in op_type:
        return "conv forward", layer
    if op_type == "Cast":
        return "casts (mixed precision)", None
    if any(p.lower() in ("adam", "optimizer") or p.lower().startswith("adam") for p in path):
        return "optimizer update", None
    if layer is not None:
        return f"{layers[layer][0]} {'backward' if backward else 'forward'} (non-conv ops)", layer
    if "loss" in op_name.lower() or "crossentropy" in op_name.lower():
        return "loss", None
    return "other ops", None


def profile(model_name: str, size: int, batch: int, warmup: int, steps: int,
            frozen: bool, inter_op: int = 0) -> dict[str, Any]:
    """Profiles `steps` training steps of one contender.

    Args:
        model_name: a throughput.py contender ("vggunet", "vggunet_matched", "sm", ...).
        size: square input size.
        batch: batch size.
        warmup: untimed steps first.
        steps: profiled steps.
        frozen: freeze the encoder first (vggunet contenders only).
        inter_op: TensorFlow inter-op threads (0 = TensorFlow's default). With 1, ops run one
            at a time on all cores, so each op's time is comparable with the probe.

    Returns:
        The figures: per-category ms per step, shares, conv GFLOP/s, the probe, top op types.
    """
    import tensorflow as tf

    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    model = build_contender(model_name, size)
    if frozen:
        from vggunet.freezing import freeze

        freeze(model, "encoder")
    x, y = random_batch(size, batch)
    compile_for_bench(model, jit=False)
    layers = layer_index(model)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    probe_before = conv_probe_gflop_s()
    with tempfile.TemporaryDirectory() as tmp:
        options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=2,
                                                           python_tracer_level=0,
                                                           device_tracer_level=0)
        tf.profiler.experimental.start(tmp, options=options)
        walls = []
        for _ in range(steps):
            t0 = time.perf_counter()
            model.train_on_batch(x, y)
            walls.append(time.perf_counter() - t0)
        tf.profiler.experimental.stop()
        ops = read_host_ops(Path(tmp))
    probe_after = conv_probe_gflop_s()

    by_cat: dict[str, float] = defaultdict(float)
    flops_cat: dict[str, float] = defaultdict(float)
    by_type: dict[str, float] = defaultdict(float)
    conv_layers: dict[str, float] = defaultdict(float)
    for name, ps in ops.items():
        ms = ps / 1e9 / steps
        cat, layer = categorize(name, layers)
        if cat == "runtime (not an op)":
            continue  # executor/function wrappers: their self time is scheduling overhead
        by_cat[cat] += ms
        by_type[OP_EVENT.match(name).group(2)] += ms
        if cat.startswith("conv") and layer is not None:
            flops_cat[cat] += layers[layer][1] * batch
            conv_layers[layer] += ms
    total_ms = sum(by_cat.values())
    probe = max(probe_before, probe_after)
    cats = {
        cat: {"ms_per_step": round(ms, 1), "share": round(ms / total_ms, 4),
              **({"gflop_s": round(flops_cat[cat] / (ms / 1e3) / 1e9, 1),
                  "vs_probe": round(flops_cat[cat] / (ms / 1e3) / 1e9 / probe, 3)}
                 if flops_cat.get(cat) else {})}
        for cat, ms in sorted(by_cat.items(), key=lambda kv: -kv[1])
    }
    return {
        "model": model_name, "frozen": frozen, "size": size, "batch": batch, "steps": steps,
        "inter_op_threads": inter_op or "default",
        "wall_s_per_step": round(statistics.median(walls), 3),
        "op_ms_per_step": round(total_ms, 1),
        "probe_bf16_gflop_s": [round(probe_before, 1), round(probe_after, 1)],
        "categories": cats,
        "top_op_types": {k: round(v, 1) for k, v in
                         sorted(by_type.items(), key=lambda kv: -kv[1])[:12]},
        "top_conv_layers_ms": {k: round(v, 1) for k, v in
                               sorted(conv_layers.items(), key=lambda kv: -kv[1])[:10]},
        "load": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def markdown(report: dict[str, Any]) -> str:
    """A markdown table of one profile report.

    Args:
        report: from `profile`.

    Returns:
        The table, with a heading line naming the model and step time.
    """
    inter = report.get("inter_op_threads", "default")
    lines = [f"`{report['model']}`{' (encoder frozen)' if report['frozen'] else ''}, "
             f"{report['size']}², batch {report['batch']}, inter-op threads {inter}: "
             f"{report['wall_s_per_step']:.2f} s per step (wall), "
             f"{report['op_ms_per_step']:.0f} ms of op time (ops overlap "
             f"{report['op_ms_per_step'] / 1e3 / report['wall_s_per_step']:.2f}×); bf16 probe "
             f"{max(report['probe_bf16_gflop_s']):.0f} GFLOP/s", "",
             "| where | ms / step | share | GFLOP/s | vs bf16 probe |", "|---|---:|---:|---:|---:|"]
    for cat, v in report["categories"].items():
        g = f"{v['gflop_s']:.0f}" if "gflop_s" in v else ""
        p = f"{v['vs_probe']:.0%}" if "vs_probe" in v else ""
        lines.append(f"| {cat} | {v['ms_per_step']:.0f} | {v['share']:.1%} | {g} | {p} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Profiles one contender and writes its JSON; prints the markdown table.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`).

    Returns:
        0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vggunet",
                        help="a throughput.py contender: vggunet, vggunet_matched, "
                             "vggunet_fp32, sm, kuc")
    parser.add_argument("--frozen", action="store_true", help="encoder frozen (vggunet only)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--inter-op", type=int, default=0,
                        help="TensorFlow inter-op threads (0 = default; 1 = one op at a time)")
    args = parser.parse_args(argv)
    report = profile(args.model, args.size, args.batch, args.warmup, args.steps, args.frozen,
                     args.inter_op)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = f"_{args.size}" + ("_frozen" if args.frozen else "") + \
        (f"_interop{args.inter_op}" if args.inter_op else "")
    out = RESULTS / f"profile_{args.model}{suffix}.json"
    out.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"\ntop op types (ms/step): {report['top_op_types']}")
    print(f"top conv layers (ms/step): {report['top_conv_layers_ms']}")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
