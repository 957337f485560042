"""Scoring a 3D model on whole volumes: per-class Dice, sensitivity and specificity.

Each case is predicted whole by :func:`vggunet.inference.volume.predict_volume` (sliding window)
and compared with its label volume. Scores are the lab's table
(:func:`vggunet.metrics.volumetric.volume_scores`, exact Dice: no smoothing, 1 for a class absent
from both truth and prediction; NaN where a denominator is 0), per case and over the set, where
the set's scores come from the counts summed over every voxel of every case (not the mean of the
cases' scores).

Label modes (``VOLUME_LABEL_MODES``):

* ``"multilabel"``: the model has sigmoid outputs for classes 1..K (the lab's, without a
  background channel); predicted = probability > ``threshold`` per channel, true = the one-hot
  label without background. Classes 1..K are scored.
* ``"index"``: softmax outputs for classes 0..K-1; predicted = argmax; classes 1..K-1 are
  scored (their mean is the summary) and the background class 0 is reported too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vggunet import choices
from vggunet.checks import check_choice, check_number
from vggunet.console import resolve_say
from vggunet.errors import ArgumentError, DataError
from vggunet.fileio import write_json_atomic
from vggunet.inference.volume import predict_volume
from vggunet.metrics.volumetric import _class_counts, _scores_from_counts

__all__ = ["VOLUME_LABEL_MODES", "evaluate_volumes", "format_volume_scores"]

VOLUME_LABEL_MODES = choices.LABEL_MODES
_SCORES = ("dice", "sensitivity", "specificity")


def _iter_cases(cases: Iterable[Any]) -> Iterator[tuple[str, Any, Any]]:
    """(name, image, label) from `VolumeCase`s (read one at a time), (name, image, label) or
    (image, label) tuples."""
    from vggunet.data.volume_cases import VolumeCase, load_case

    for i, case in enumerate(cases):
        if isinstance(case, VolumeCase):
            image, label = load_case(case)
            if label is None:
                raise ArgumentError(f"case {case.name} ({case.images[0]}) has no label file "
                                    f"to score against")
            yield case.name, image, label
            continue
        if not isinstance(case, (tuple, list)) or len(case) not in (2, 3):
            raise ArgumentError(
                f"cases must hold (name, image, label) or (image, label) tuples; item {i} is "
                f"{type(case).__name__}{'' if not isinstance(case, (tuple, list)) else len(case)}."
            )
        if len(case) == 2:
            yield f"case_{i}", case[0], case[1]
        else:
            yield str(case[0]), case[1], case[2]


def _class_names(class_names: Sequence[str] | None, outputs: int, label_mode: str) -> list[str]:
    """Names of classes 0..N-1 (N = outputs + 1 for multilabel, outputs for index)."""
    total = outputs + 1 if label_mode == "multilabel" else outputs
    if class_names is None:
        return ["background", *(str(k) for k in range(1, total))]
    names = [str(n) for n in class_names]
    if label_mode == "multilabel" and len(names) == outputs:  # foreground names only
        names = ["background", *names]
    if len(names) != total:
        raise ArgumentError(
            f"class_names has {len(names)} names ({names}); the model's {outputs} outputs in "
            f"label_mode={label_mode!r} need {total} (background first)"
            f"{f' or {outputs} (foreground only)' if label_mode == 'multilabel' else ''}."
        )
    return names


def _case_counts(name: str, probs: np.ndarray, label: Any, label_mode: str,
                 threshold: float) -> np.ndarray:
    """Per-class counts (see ``_class_counts``) of one case, over the scored classes."""
    label = np.asarray(label)
    if label.shape != probs.shape[:3]:
        raise DataError(f"case {name}: label shape {label.shape} does not match the image's "
                        f"spatial shape {probs.shape[:3]}.")
    if not np.issubdtype(label.dtype, np.integer) and not np.all(np.mod(label, 1) == 0):
        raise DataError(f"case {name}: label holds non-integer values (dtype {label.dtype}).")
    outputs = probs.shape[-1]
    first = 1 if label_mode == "multilabel" else 0
    high = outputs + first
    if label.size and (label.min() < 0 or label.max() >= high):
        bad = int(label.max() if label.max() >= high else label.min())
        raise DataError(f"case {name}: label value {bad} is outside [0, {high}) for a model "
                        f"with {outputs} outputs in label_mode={label_mode!r}.")
    if label_mode == "multilabel":
        pred = [probs[..., k] > threshold for k in range(outputs)]
    else:
        argmax = np.argmax(probs, axis=-1)
        pred = [argmax == k for k in range(outputs)]
    true = [label == k + first for k in range(outputs)]
    return _class_counts(true, pred)


def _summary(table: dict[str, dict[str, float]], names: Sequence[str]) -> dict[str, float]:
    """The mean of each score over the named classes (NaNs skipped; NaN if all are)."""
    means = {}
    for score in _SCORES:
        values = [table[n][score] for n in names if not math.isnan(table[n][score])]
        means[score] = float(np.mean(values)) if values else float("nan")
    return means


def evaluate_volumes(model: Any, cases: Iterable[Any], *, patch: Any = None,
                     overlap: Any = 0.5, batch_size: int = 2, standardize: Any = "lab",
                     label_mode: str = "multilabel", class_names: Sequence[str] | None = None,
                     tta: bool = False, out_json: str | os.PathLike | None = None,
                     verbose: bool = True, threshold: float = 0.5,
                     blend: str = "gaussian") -> dict[str, Any]:
    """Scores a 3D model on whole volumes (see the module docstring).

    Args:
        model: a Keras 3D model (e.g. ``build_unet_3d``), sigmoid or softmax outputs.
        cases: `VolumeCase`s (from `find_volume_cases`; read one at a time), (name, image,
            label) or (image, label) tuples, or any iterable yielding them;
            image ``(H, W, D, C)`` / ``(H, W, D)`` raw intensities, label ``(H, W, D)`` ints.
        patch, overlap, batch_size, standardize, tta, blend: as in ``predict_volume``.
        label_mode: one of ``VOLUME_LABEL_MODES``.
        class_names: names of classes 0..N-1, background first (multilabel also takes the
            K foreground names alone); default ``"background", "1", "2", ...``.
        out_json: also write the result there as JSON (atomically; NaN written as null).
        verbose: print one line per case.
        threshold: multilabel's cut: a class is predicted where its probability is above it.

    Returns:
        ``{"label_mode", "classes" (the scored classes), "foreground", "cases": [{"name",
        "shape", "scores": {class: {"dice", "sensitivity", "specificity"}}, "mean"}],
        "overall": {class: {...}}, "mean": {...}}``; the means are over the foreground classes.

    Raises:
        ArgumentError: On bad arguments or an empty set.
        DataError: On a label that does not fit its image or the model (naming the case).
    """
    label_mode = check_choice(label_mode, VOLUME_LABEL_MODES, "label_mode")
    threshold = check_number(threshold, "threshold", low=0, high=1)
    say = resolve_say(verbose)
    names: list[str] = []
    scored: list[str] = []
    total: np.ndarray | None = None
    per_case = []
    for name, image, label in _iter_cases(cases):
        probs = predict_volume(model, image, patch=patch, overlap=overlap,
                               batch_size=batch_size, blend=blend, standardize=standardize,
                               tta=tta)
        if not names:
            names = _class_names(class_names, probs.shape[-1], label_mode)
            scored = names[1:] if label_mode == "multilabel" else names
        counts = _case_counts(name, probs, label, label_mode, threshold)
        total = counts if total is None else total + counts
        table = _scores_from_counts(counts, scored, 0.0)
        mean = _summary(table, names[1:])
        per_case.append({"name": name, "shape": list(probs.shape[:3]), "scores": table,
                         "mean": mean})
        say(f"{name}: mean Dice {mean['dice']:.4f}")
    if total is None:
        raise ArgumentError("cases is empty: nothing to evaluate.")
    overall = _scores_from_counts(total, scored, 0.0)
    result = {"label_mode": label_mode, "classes": scored, "foreground": names[1:],
              "cases": per_case, "overall": overall, "mean": _summary(overall, names[1:])}
    if out_json is not None:
        write_json_atomic(_json_safe(result), Path(out_json))
    return result


def _json_safe(value: Any) -> Any:
    """NaN (undefined scores) as None: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def format_volume_scores(result: dict[str, Any]) -> str:
    """A text table of an :func:`evaluate_volumes` result: the set first, then each case.

    Args:
        result: what ``evaluate_volumes`` returned (or its JSON, read back).

    Returns:
        The table, one row per case and class, NaN/None shown as ``nan``.

    Example:
        >>> row = {"dice": 0.5, "sensitivity": 1.0, "specificity": None}
        >>> print(format_volume_scores({"label_mode": "multilabel", "overall": {"tumour": row},
        ...                             "mean": row, "cases": []}))
        volume scores (multilabel, 0 cases)
        case      class         dice  sensitivity  specificity
        overall   tumour      0.5000       1.0000          nan
        overall   mean        0.5000       1.0000          nan
    """
    def row(case: str, name: str, scores: dict[str, Any]) -> str:
        values = ["nan" if scores[s] is None else f"{scores[s]:.4f}" for s in _SCORES]
        return f"{case:<9} {name:<10} {values[0]:>7} {values[1]:>12} {values[2]:>12}"

    lines = [f"volume scores ({result['label_mode']}, {len(result['cases'])} cases)",
             f"{'case':<9} {'class':<10} {'dice':>7} {'sensitivity':>12} {'specificity':>12}"]
    sections = [("overall", result["overall"], result["mean"])]
    sections += [(c["name"], c["scores"], c["mean"]) for c in result["cases"]]
    for case, table, mean in sections:
        lines += [row(case, name, scores) for name, scores in table.items()]
        lines.append(row(case, "mean", mean))
    return "\n".join(lines)
