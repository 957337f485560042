"""BENCHMARKS.md's throughput section (`benchmarks/throughput.py`, issue 4).

`summarize` turns the raw figures into the ratios the issue's targets are stated in;
`markdown` renders the section; `write_section` replaces it in BENCHMARKS.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SECTION = "## Throughput (issue 4)"
CONTENDERS = {
    "vggunet": "vggunet `build_vgg_unet(\"vgg16\")`, defaults (precision auto)",
    "vggunet_fp32": "vggunet, `precision=\"float32\"`",
    "vggunet_matched": "vggunet, `decoder_filters=(256, 128, 64, 32, 16)`",
    "sm": "segmentation_models 1.0.1 `Unet(\"vgg16\")`",
    "kuc": "keras-unet-collection 0.1.13 `unet_2d(backbone=\"VGG16\")`",
}
EXTRAS = ("vggunet_jit", "vggunet_matched_jit")
TILED = ("tiled_1024", "tiled_2048", "tiled_4096")
# (label, summary key, goal, percent?) of the targets table, in its order.
TARGETS = (
    ("training img/s, vggunet default / segmentation_models", "train_vggunet_over_sm", "≥ 1.2×"),
    ("inference img/s, vggunet default / segmentation_models", "infer_vggunet_over_sm",
     "≥ 1.3×"),
    ("training img/s, matched decoder / segmentation_models", "train_matched_over_sm", "≥ 1.8×"),
    ("inference img/s, matched decoder / segmentation_models", "infer_matched_over_sm",
     "≥ 1.8×"),
    ("training img/s, vggunet / keras-unet-collection", "train_vggunet_over_kuc", "≥ 3×"),
    ("inference img/s, vggunet / keras-unet-collection", "infer_vggunet_over_kuc", "≥ 3×"),
    ("training GFLOP/s / bfloat16 conv peak", "train_efficiency_vs_bf16_peak", "≥ 85%"),
    ("inference GFLOP/s / bfloat16 conv peak", "infer_efficiency_vs_bf16_peak", "≥ 90%"),
)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None if either is missing (or zero)."""
    return None if not a or not b else a / b


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios and efficiencies the issue's targets are stated in.

    Args:
        results: the raw figures per job key (`vggunet`, `sm`, `conv_peak`, `tiled_1024`, ...).

    Returns:
        The summary: `<mode>_vggunet_over_sm` and the other ratios, efficiencies against the
        bfloat16 convolution peak, tiled-prediction spread, 448² / 224² cost per pixel.
    """
    def get(key: str, field: str) -> float | None:
        return results.get(key, {}).get(field)

    peaks = [get(k, "peak_bfloat16_gflop_s") for k in ("conv_peak", "conv_peak_end")]
    peak = max((p for p in peaks if p), default=None)
    s: dict[str, Any] = {"bf16_peak_gflop_s": peak}
    for mode in ("train", "infer"):
        img_s = f"{mode}_img_s"
        s[f"{mode}_vggunet_over_sm"] = ratio(get("vggunet", img_s), get("sm", img_s))
        s[f"{mode}_matched_over_sm"] = ratio(get("vggunet_matched", img_s), get("sm", img_s))
        s[f"{mode}_vggunet_over_kuc"] = ratio(get("vggunet", img_s), get("kuc", img_s))
        s[f"{mode}_efficiency_vs_bf16_peak"] = ratio(get("vggunet", f"{mode}_gflop_s"), peak)
        s[f"{mode}_jit_over_nojit"] = ratio(get("vggunet_jit", img_s), get("vggunet", img_s))
    s["frozen_over_trainable_step"] = get("vggunet", "frozen_over_trainable")
    s["frozen_over_trainable_step_matched"] = get("vggunet_matched", "frozen_over_trainable")
    s["train_efficiency_vs_probe"] = get("vggunet", "train_efficiency_vs_probe")
    s["infer_efficiency_vs_probe"] = get("vggunet", "infer_efficiency_vs_probe")
    s["train_rss_vggunet_over_sm"] = ratio(get("vggunet", "peak_rss_train_mib"),
                                           get("sm", "peak_rss_train_mib"))
    tiled = [results[k]["s_per_mpix"] for k in TILED if "s_per_mpix" in results.get(k, {})]
    if len(tiled) == 3:
        s["tiled_s_per_mpix_spread"] = max(tiled) / min(tiled) - 1
        s["tiled_4096_peak_rss_gib"] = results["tiled_4096"]["peak_rss_mib"] / 1024
    base = get("vggunet", "train_step_s")
    if base and "s_per_mpix" in results.get("train_448", {}):
        per_mpix_224 = base / 8 / (224 * 224 / 1e6)
        s["train_448_over_224_per_pixel"] = results["train_448"]["s_per_mpix"] / per_mpix_224
    return s


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    """Formats a figure, or an em dash when it is missing."""
    return "—" if value is None else f"{value:{spec}}{suffix}"


def _x(v: float | None) -> str:
    return fmt(v, ".2f", "×")


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def _header(report: dict[str, Any]) -> list[str]:
    r, m = report["results"], report["machine"]
    size = r.get("vggunet", {}).get("size", "?")
    lines = [SECTION, "",
             f"Measured {report['date']} on {m['cpu']} ({m['cores']} cores; "
             f"{', '.join(m.get('bf16_flags', []))}), TensorFlow {m['versions']['tensorflow']}, "
             f"Keras {m['versions']['keras']}, Python {m['python']}. Every contender runs in "
             f"its own process, one after another in the same run. Input {size}×{size}×3, batch "
             "8, 2 classes, `weights=None`, Adam + sparse cross-entropy, medians of the timed "
             "steps after warm-up. Runs (load average at start / end):", ""]
    # A report from before partial reruns has one run: the whole report's.
    runs = report.get("runs") or [
        {k: report[k] for k in ("command", "date", "loadavg_start", "loadavg_end")}
        | {"jobs": sorted(r)}]
    for run in runs:
        lines.append(f"- `{run['command']}` ({run['date']}; load {run['loadavg_start']} / "
                     f"{run['loadavg_end']}): {', '.join(run['jobs'])}")
    return lines


def _contender_rows(r: dict[str, Any]) -> list[str]:
    lines = ["", "",
             "| contender | policy | params | fwd GFLOPs/img | train img/s | infer img/s | "
             "train GFLOP/s | infer GFLOP/s | peak RSS train |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in list(CONTENDERS) + list(EXTRAS):
        row = r.get(key)
        if row is None:
            continue
        label = CONTENDERS.get(key, key.replace("_jit", "") + ", `jit_compile=True`")
        if "error" in row:
            lines.append(f"| {label} | failed: {row['error'][:120]} |||||||")
            continue
        lines.append(
            f"| {label} | {row['policy']} | {row['params']:,} | "
            f"{row['forward_gflops_per_image']:.1f} | {row['train_img_s']:.2f} | "
            f"{row['infer_img_s']:.2f} | {row['train_gflop_s']:.0f} | "
            f"{row['infer_gflop_s']:.0f} | {row['peak_rss_train_mib'] / 1024:.2f} GiB |")
    return lines


def _target_rows(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    def best(field: str) -> float | None:
        values = [r.get(k, {}).get(field) for k in ("conv_peak", "conv_peak_end")]
        return max((v for v in values if v), default=None)

    lines = ["",
             f"Convolution limit (Keras Conv2D 3×3, forward, best of 4 shapes, measured first "
             f"and last in the run): float32 {fmt(best('peak_float32_gflop_s'), '.0f')} "
             f"GFLOP/s, bfloat16 {fmt(best('peak_bfloat16_gflop_s'), '.0f')} GFLOP/s.", "",
             "| target | measured | goal |", "|---|---:|---:|"]
    for label, key, goal in TARGETS:
        value = _pct(s[key]) if goal.endswith("%") else _x(s[key])
        lines.append(f"| {label} | {value} | {goal} |")
    lines += [
        "| same, against the bf16 conv probed in the contender's own process just before and "
        f"after | {_pct(s['train_efficiency_vs_probe'])} · "
        f"{_pct(s['infer_efficiency_vs_probe'])} | (shared-machine check) |",
        "| frozen-encoder step / trainable step (default · matched decoder) | "
        f"{_x(s['frozen_over_trainable_step'])} · "
        f"{_x(s['frozen_over_trainable_step_matched'])} | ≤ 0.6× |",
        "| peak RSS in training, vggunet / segmentation_models | "
        f"{_x(s['train_rss_vggunet_over_sm'])} | ≤ 1× |",
    ]
    if "tiled_s_per_mpix_spread" in s:
        lines += [
            f"| `predict_tiled` s/MPix spread over 1024², 2048², 4096² | "
            f"{_pct(s['tiled_s_per_mpix_spread'])} | ≤ 15% |",
            f"| `predict_tiled` peak RSS at 4096² | {s['tiled_4096_peak_rss_gib']:.2f} GiB | "
            "< 3 GiB |"]
    if "train_448_over_224_per_pixel" in s:
        lines.append(f"| training time per pixel, 448² / 224² | "
                     f"{_x(s['train_448_over_224_per_pixel'])} | ≤ 1× (linear) |")
    if s.get("train_jit_over_nojit"):
        lines.append(f"| `jit_compile=True` / default, training · inference img/s | "
                     f"{_x(s['train_jit_over_nojit'])} · {_x(s['infer_jit_over_nojit'])} | "
                     "kept only if > 1× |")
    return lines


def _pipeline_and_tiled(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    pipe = r.get("pipeline")
    if pipe and "error" not in pipe:
        lines += ["", f"tf.data pipeline alone (ISBI, {pipe['size']}² crops, batch "
                  f"{pipe['batch']}): {pipe['crop_flip_img_s']:.0f} img/s with crop+flip, "
                  f"{pipe['crop_flip_rot90_elastic_img_s']:.0f} img/s with rot90+elastic, "
                  f"against {fmt(r.get('vggunet', {}).get('train_img_s'), '.1f')} img/s of "
                  "model training."]
    tiled = [r[k] for k in TILED if "s_per_mpix" in r.get(k, {})]
    if tiled:
        lines += ["", "`predict_tiled` (default model, tile 512, overlap 64): " + "; ".join(
            f"{t['side']}²: {t['seconds']:.1f} s, {t['s_per_mpix']:.2f} s/MPix, peak RSS "
            f"{t['peak_rss_mib'] / 1024:.2f} GiB" for t in tiled) + "."]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The BENCHMARKS.md section for a run.

    Args:
        report: the results file's content (`date`, `machine`, `results`, `summary`, `runs`).

    Returns:
        The section, from its heading, ending in a newline.
    """
    r, s = report["results"], report["summary"]
    lines = (_header(report) + _contender_rows(r) + _target_rows(r, s)
             + _pipeline_and_tiled(r))
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, heading: str = SECTION) -> None:
    """Replaces (or appends) the `heading` section of BENCHMARKS.md, leaving the others.

    Args:
        path: the BENCHMARKS.md file (created when missing).
        section: the new section, from its heading.
        heading: the heading line that starts the section.

    Returns:
        None. The file is replaced atomically.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + section + ("" if nxt < 0 else "\n" + text[nxt + 1:])
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
