"""BENCHMARKS.md's tables for the ISBI transfer benchmark (`benchmarks/transfer_isbi.py`, issue 5).

`render_table` turns the results file into markdown (one row per run, the spread between
seeds, where the errors sit, learning curves); `update_benchmarks_md` writes it between the
section's markers and keeps the prose around it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SECTION = "## Transfer learning on ISBI 2012 (issue 5)"
TABLE_BEGIN = "<!-- transfer_isbi.py --table: begin -->"
TABLE_END = "<!-- transfer_isbi.py --table: end -->"

RUN_HEADER = [
    "| config | encoder | decoder norm | training (Adam lr) | augment | precision | seed | "
    "pixel error | membrane Dice / IoU | cell Dice / IoU | mean IoU | pixel error, TTA | "
    "mean IoU, TTA | pixel error, mirror pad (with TTA) | train wall (s/step) | "
    "load avg start→end |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def _fmt_spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{sum(values) / len(values):.4f} ({min(values):.4f}–{max(values):.4f})"


def _run_name(r: dict[str, Any]) -> str:
    return f"`{r['config']}`" + (f" {r['tag']}" if r.get("tag") else "")


def _decoder_norm(r: dict[str, Any]) -> str:
    if r["model"] == "build_unet":
        return "– (lab model)"
    norm = {(False, False): "none", (True, False): "BN after convs",
            (True, True): "BN after convs + on skips",
            (False, True): "BN on skips"}[(bool(r["decoder_batchnorm"]),
                                           bool(r.get("skip_batchnorm")))]
    if norm != "none":
        # Rows run before `bn_momentum` existed used Keras's default 0.99.
        norm += f", momentum {r.get('bn_momentum', 0.99):g}"
        if r.get("recalibrate_bn"):
            norm += f", re-estimated on {r['recalibrate_bn']} batches per epoch"
    if r.get("decoder_filters"):
        norm += f"; decoder {','.join(str(f) for f in r['decoder_filters'])}"
    return norm


def _training(r: dict[str, Any]) -> str:
    lr = f"{r['lr']:g}" + (f" then {r['lr2']:g}" if r.get("lr2") else "")
    if r.get("lr_schedule") == "cosine":
        lr += ", cosine decay over the phase"
    elif r.get("lr_decay_last"):
        lr += f", ×0.1 for the last {r['lr_decay_last']:.0%} of epochs"
    lr += f"; {r['crop']}² crops, batch {r['batch']}"
    # Rows from before `--loss` existed trained with CE + Dice.
    return lr + f"; loss {r.get('loss', 'ce+dice').upper().replace('DICE', 'Dice')}"


def run_row(r: dict[str, Any]) -> str:
    """One run's row of the main table.

    Args:
        r: a run record of the results file.

    Returns:
        The markdown row.
    """
    p, t = r["plain"], r.get("tta")
    tta = f"{t['pixel_error']:.4f} | {t['mean_iou']:.3f}" if t else "– | –"
    mirror = "–"
    if r.get("mirror"):
        mirror = f"{r['mirror_pad']} px: {r['mirror']['pixel_error']:.4f}"
        if r.get("tta_mirror"):
            mirror += f" ({r['tta_mirror']['pixel_error']:.4f})"
    precision = "mixed bf16" if r["precision"] == "auto" else r["precision"]
    return (
        f"| {_run_name(r)} {r['label']} | {r['weights']} | {_decoder_norm(r)} | "
        f"{r['phases']}, {_training(r)} | {r['augment']} | {precision} | {r['seed']} | "
        f"{p['pixel_error']:.4f} | {p['membrane_dice']:.3f} / {p['membrane_iou']:.3f} | "
        f"{p['cell_dice']:.3f} / {p['cell_iou']:.3f} | {p['mean_iou']:.3f} | {tta} | "
        f"{mirror} | {r['train_wall_s']:.0f} s ({r['s_per_step']:.2f}) | "
        f"{r['load_start'][0]:.1f}→{r['load_end'][0]:.1f} |"
    )


def spread_rows(runs: list[dict[str, Any]]) -> list[str]:
    """The seed-spread table: configurations run with more than one seed.

    Args:
        runs: run records.

    Returns:
        Markdown lines (none when no configuration has two seeds).
    """
    by_config: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        variant = r["config"] if r.get("bn_momentum") is None else \
            f"{r['config']} (momentum {r['bn_momentum']:g})"
        if r.get("tag"):
            variant += f" {r['tag']}"
        by_config.setdefault(variant, []).append(r)
    spread = [(name, rs) for name, rs in by_config.items() if len(rs) > 1]
    if not spread:
        return []
    lines = ["", "Seed spread (mean, min–max over seeds):", "",
             "| config | seeds | pixel error | pixel error, TTA | mean IoU |",
             "|---|---|---|---|---|"]
    for name, rs in spread:
        tta_values = [r["tta"]["pixel_error"] for r in rs if r.get("tta")]
        lines.append(
            f"| `{name}` | {', '.join(str(r['seed']) for r in rs)} | "
            f"{_fmt_spread([r['plain']['pixel_error'] for r in rs])} | "
            f"{_fmt_spread(tta_values) if tta_values else '–'} | "
            f"{_fmt_spread([r['plain']['mean_iou'] for r in rs])} |"
        )
    return lines


def error_rows(runs: list[dict[str, Any]]) -> list[str]:
    """Where the held-out errors sit, for the runs that were rescored (`errors`).

    Args:
        runs: run records.

    Returns:
        Markdown lines (none when no run has an error breakdown).
    """
    located = [r for r in runs if r.get("errors")]
    if not located:
        return []
    lines = ["", "Where the held-out errors sit (plain prediction; a class-edge pixel has "
             "both classes in its 3×3 label neighbourhood):", "",
             "| run | pixels on class edges | error on / off them | errors on them | "
             "error within / beyond the border band |", "|---|---:|---:|---:|---:|"]
    for r in located:
        e = r["errors"]
        lines.append(f"| {_run_name(r)} seed {r['seed']} | {e['edge_share']:.1%} | "
                     f"{e['edge_error']:.3f} / {e['off_edge_error']:.4f} | "
                     f"{e['edge_error_share']:.0%} | {e['border_error']:.4f} / "
                     f"{e['interior_error']:.4f} ({e['border_px']} px) |")
    return lines


def curve_rows(r: dict[str, Any]) -> list[str]:
    """One run's held-out learning curve (`--curve`) as a table.

    Args:
        r: a run record with a `curve`.

    Returns:
        Markdown lines.
    """
    lines = ["", f"Held-out learning curve of {_run_name(r)} (seed {r['seed']}; BatchNorm "
             "statistics as checkpointed; training wall time without the scoring):", "",
             "| step | training wall (min) | pixel error | membrane Dice | mean IoU | "
             "training loss |", "|---:|---:|---:|---:|---:|---:|"]
    for c in r["curve"]:
        lines.append(f"| {c['step']} | {c['train_wall_s'] / 60:.1f} | {c['pixel_error']:.4f} | "
                     f"{c['membrane_dice']:.3f} | {c['mean_iou']:.3f} | {c['loss']:.3f} |")
    return lines


def render_table(results: dict[str, Any], config_order: Iterable[str] = ()) -> str:
    """The markdown body of BENCHMARKS.md's issue-5 section from the results file.

    Args:
        results: the parsed results JSON.
        config_order: configuration names in the order their rows appear (others last).

    Returns:
        Markdown: one row per (configuration, seed), TTA columns, the per-config spread
        between seeds, where the errors sit, and the learning curves.
    """
    runs = list(results["runs"].values())
    order = {name: i for i, name in enumerate(config_order)}
    runs.sort(key=lambda r: (order.get(r["config"], len(order)), r["seed"]))
    lines = RUN_HEADER + [run_row(r) for r in runs] + spread_rows(runs) + error_rows(runs)
    for r in runs:
        if r.get("curve"):
            lines += curve_rows(r)
    return "\n".join(lines)


def update_benchmarks_md(table: str, path: Path) -> None:
    """Writes the results table into BENCHMARKS.md's issue-5 section, leaving the rest as it is.

    Inside the section (from its `## Transfer learning on ISBI 2012 (issue 5)` heading to the
    next `## ` heading) only the text between the `TABLE_BEGIN` and `TABLE_END` markers is
    replaced, so the prose around the table is kept; a missing section is appended with the
    markers. The file is replaced atomically.

    Args:
        table: the markdown table (see `render_table`).
        path: the BENCHMARKS.md file.

    Returns:
        None.
    """
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    marked = f"{TABLE_BEGIN}\n{table.strip()}\n{TABLE_END}"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{marked}\n"
    else:
        end = text.find("\n## ", start + len(SECTION))
        end = len(text) if end < 0 else end + 1
        section = text[start:end]
        if TABLE_BEGIN in section and TABLE_END in section:
            head, rest = section.split(TABLE_BEGIN, 1)
            section = head + marked + rest.split(TABLE_END, 1)[1]
        else:
            section = section.rstrip("\n") + f"\n\n{marked}\n" + ("\n" if end < len(text)
                                                                    else "")
        text = text[:start] + section + text[end:]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
