"""Markdown tables of `benchmarks/results/photos.json` (issue 17) for BENCHMARKS.md.

Three tables: the runs (budget in steps, wall time, load, held-out mIoU and pixel accuracy,
pooled rare-class predicted/true pixels), the IoU of the 10 classes with the most held-out
pixels, and how the rare classes are predicted (median predicted/true ratio, how many are
over-predicted more than 2x, how many never predicted). `--ablations KEY` prints instead the
runs at the budget of the reference run KEY, each with its mIoU change against the recipe in
the same precision, at the same steps where the recipe ran them.

    .venv/bin/python benchmarks/photos_report.py            # every run in photos.json
    .venv/bin/python benchmarks/photos_report.py --runs defaults/seed0 recipe/seed0
    .venv/bin/python benchmarks/photos_report.py --ablations recipe/seed0/15min
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photos_runs import RESULTS as RESULTS_DIR, read_records, split_key  # noqa: E402

RESULTS = RESULTS_DIR / "photos.json"


def run_rows(results: dict[str, Any]) -> list[str]:
    """One table row per run: budget, precision, steps, wall time, load, held-out scores.

    Args:
        results: photos.json's contents (key "RUN/seedN[/Mmin][/precision]" -> record).

    Returns:
        Markdown lines, header included.

    Example:
        >>> record = {"minutes": 40, "steps_done": [100, 225], "train_wall_s": 3000,
        ...           "load_before": [1.0, 1.0, 1.0], "held_out": {"mean_iou": 0.2,
        ...           "pixel_accuracy": 0.8, "rare_pred_over_true_all": 1.5}}
        >>> run_rows({"recipe/seed0": record})[-1]
        '| recipe | 0 | 40 | ? | 100 + 225 | 50.0 | 1.0 | 0.200 | 0.800 | 1.50 |'
        >>> run_rows({"recipe/seed0/float32": {**record, "policy": "float32"}})[-1][:35]
        '| recipe | 0 | 40 | float32 | 100 +'
    """
    lines = ["| run | seed | budget (min) | precision | steps (phase 1 + 2) | wall (min) | "
             "load before | mIoU | pixel acc. | rare classes predicted / true |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for key, rec in results.items():
        run, seed = split_key(key)  # the budget has its own column
        scores = rec["held_out"]
        steps = " + ".join(str(s) for s in rec["steps_done"])
        lines.append(f"| {run} | {seed} | {rec['minutes']:g} | {_policy(rec)} | {steps} | "
                     f"{rec['train_wall_s'] / 60:.1f} | {rec['load_before'][0]:.1f} | "
                     f"{scores['mean_iou']:.3f} | {scores['pixel_accuracy']:.3f} | "
                     f"{scores['rare_pred_over_true_all']:.2f} |")
    return lines


def top10_rows(results: dict[str, Any]) -> list[str]:
    """The IoU of the 10 most frequent held-out classes, a column per run.

    Args:
        results: photos.json's contents.

    Returns:
        Markdown lines (the classes of the first run, which are the same for every run:
        the held-out set is fixed).
    """
    keys = list(results)
    classes = list(results[keys[0]]["held_out"]["top10_iou"])
    lines = ["| class | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name in classes:
        cells = [f"{results[k]['held_out']['top10_iou'].get(name, float('nan')):.3f}"
                 for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def rare_summary(ratios: dict[str, float]) -> dict[str, Any]:
    """How a run predicts the rarer classes, from their predicted / true pixel ratios.

    Args:
        ratios: class name -> predicted pixels / true pixels (held out).

    Returns:
        {"classes", "median", "over_2x" (names), "never" (count of ratio 0)}.

    Example:
        >>> rare_summary({"a": 0.0, "b": 3.0, "c": 1.0})
        {'classes': 3, 'median': 1.0, 'over_2x': ['b'], 'never': 1}
    """
    values = list(ratios.values())
    return {"classes": len(values), "median": statistics.median(values) if values else 0.0,
            "over_2x": [name for name, r in ratios.items() if r > 2.0],
            "never": sum(1 for r in values if r == 0.0)}


def rare_rows(results: dict[str, Any]) -> list[str]:
    """A row per run: how the rarer classes (beyond the 10 most frequent) are predicted.

    Args:
        results: photos.json's contents.

    Returns:
        Markdown lines.
    """
    lines = ["| run | rare classes | median predicted / true | over-predicted > 2x | "
             "never predicted |", "|---|---:|---:|---|---:|"]
    for key, rec in results.items():
        s = rare_summary(rec["held_out"]["rare_pred_over_true"])
        over = ", ".join(s["over_2x"]) or "none"
        lines.append(f"| {key} | {s['classes']} | {s['median']:.2f} | {len(s['over_2x'])} "
                     f"({over}) | {s['never']} |")
    return lines


def _policy(record: dict[str, Any]) -> str:
    """The dtype policy a run's model trained in ("?" for a record that does not say)."""
    return record.get("policy", "?")


def _short(run: str) -> str:
    """A run's name in the ablation table: "recipe-minus-cap" -> "minus cap"."""
    return run.replace("recipe-", "").replace("-", " ")


def _steps_of(key: str, rec: dict[str, Any]) -> str | None:
    """The other run whose calibrated steps a run trained (`--steps-as`), None for its own.

    Args:
        key: the run's results key.
        rec: its record (`steps_as` names the run whose calibration set its steps).

    Returns:
        That run's name, or None.
    """
    other = rec.get("steps_as")
    return None if other in (None, split_key(key)[0]) else other


def _reference_for(rec: dict[str, Any], references: list[str],
                   results: dict[str, Any]) -> str:
    """The reference run a row's change is against.

    The recipe in the same precision at the same steps where one ran (the steps are what a
    change measures otherwise, see BENCHMARKS.md), else in the same precision at its own steps,
    else the first reference.

    Args:
        rec: the row's record.
        references: the reference keys, the ablations' reference first.
        results: photos.json's contents.

    Returns:
        A key of `references`.
    """
    same_policy = [k for k in references if _policy(results[k]) == _policy(rec)]
    same_steps = [k for k in same_policy if results[k]["steps_done"] == rec["steps_done"]]
    own_steps = [k for k in same_policy if _steps_of(k, results[k]) is None]
    return (same_steps or own_steps or same_policy or references)[0]


def ablation_rows(results: dict[str, Any], reference: str) -> list[str]:
    """The ablations against their reference runs: held-out mIoU and its change, steps, rare ratio.

    A run's change is against the full recipe in the same precision and at the same steps
    where that ran (`reference`, its runs in another precision, `reference + "/float32"`, and
    at another run's steps, `.../steps-as-RUN`), else in the same precision; the "against"
    column gives the steps of the run it is against.

    Args:
        results: photos.json's contents.
        reference: the key of the full recipe at the ablations' budget.

    Returns:
        Markdown lines, the references first, then every run at its budget, by mIoU.

    Example:
        >>> rec = lambda m, p="mixed_bfloat16", s=(50, 75): {"minutes": 15, "steps_done": s,
        ...     "policy": p, "held_out": {"mean_iou": m, "pixel_accuracy": 0.7,
        ...     "rare_pred_over_true_all": 0.5}}
        >>> rows = ablation_rows({"recipe/seed0/15min": rec(0.03), "recipe/seed0": {
        ...     **rec(0.05), "minutes": 40}, "recipe-minus-poly/seed0": rec(0.02),
        ...     "recipe/seed0/15min/float32": rec(0.04, "float32"),
        ...     "recipe-ohem/seed0": {**rec(0.045, "float32", (50, 100)),
        ...                           "steps_as": "recipe-ohem"},
        ...     "recipe-minus-cap/seed0": rec(0.041, "float32", (25, 100)),
        ...     "recipe/seed0/15min/float32/steps-as-recipe-ohem": {**rec(0.042, "float32",
        ...                                       (50, 100)), "steps_as": "recipe-ohem"}},
        ...     "recipe/seed0/15min")
        >>> for line in rows[2:]:
        ...     print(line)
        | recipe | mixed_bfloat16 | 50 + 75 | 0.030 | — | — | 0.700 | 0.50 |
        | recipe | float32 | 50 + 75 | 0.040 | — | — | 0.700 | 0.50 |
        | recipe (steps of ohem) | float32 | 50 + 100 | 0.042 | — | — | 0.700 | 0.50 |
        | ohem | float32 | 50 + 100 | 0.045 | +0.003 | 50 + 100 | 0.700 | 0.50 |
        | minus cap | float32 | 25 + 100 | 0.041 | +0.001 | 50 + 75 | 0.700 | 0.50 |
        | minus poly | mixed_bfloat16 | 50 + 75 | 0.020 | -0.010 | 50 + 75 | 0.700 | 0.50 |
    """
    if reference not in results:
        raise SystemExit(f"no reference run {reference!r}; there: {', '.join(results)}")
    base = results[reference]
    references = [reference] + [k for k in results if k.startswith(reference + "/")]
    same = {k: r for k, r in results.items() if r["minutes"] == base["minutes"]
            and k not in references and k.startswith("recipe")}
    lines = ["| run | precision | steps (phase 1 + 2) | mIoU | change | against (steps) | "
             "pixel acc. | rare predicted / true |", "|---|---|---:|---:|---:|---:|---:|---:|"]

    def steps(rec: dict[str, Any]) -> str:
        return " + ".join(str(s) for s in rec["steps_done"])

    def row(key: str, rec: dict[str, Any]) -> str:
        scores = rec["held_out"]
        run, seed = split_key(key)
        name = _short(run) + (f" (seed {seed})" if seed else "")
        if _steps_of(key, rec):
            name += f" (steps of {_short(_steps_of(key, rec))})"
        if key in references:
            change = against = "—"
        else:
            ref = results[_reference_for(rec, references, results)]
            change = f"{scores['mean_iou'] - ref['held_out']['mean_iou']:+.3f}"
            against = steps(ref)
        return (f"| {name} | {_policy(rec)} | {steps(rec)} | {scores['mean_iou']:.3f} | "
                f"{change} | {against} | {scores['pixel_accuracy']:.3f} | "
                f"{scores['rare_pred_over_true_all']:.2f} |")

    order = sorted(same, key=lambda k: same[k]["held_out"]["mean_iou"], reverse=True)
    return lines + [row(k, results[k]) for k in references] + [row(k, same[k]) for k in order]


def main(argv: list[str] | None = None) -> int:
    """Prints the three tables.

    Args:
        argv: command-line arguments (None: sys.argv).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="*", default=None, help="RUN/seedN keys (default all)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--ablations", metavar="KEY", default=None,
                        help="print the ablation table against this reference run instead, "
                             "e.g. recipe/seed0/15min")
    args = parser.parse_args(argv)
    results = read_records(args.results)
    if args.runs:
        missing = [k for k in args.runs if k not in results]
        if missing:
            raise SystemExit(f"not in {args.results}: {', '.join(missing)}; "
                             f"there: {', '.join(results)}")
        results = {k: results[k] for k in args.runs}
    if args.ablations:
        print("\n".join(ablation_rows(results, args.ablations)))
        return 0
    for table in (run_rows, top10_rows, rare_rows):
        print("\n".join(table(results)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
