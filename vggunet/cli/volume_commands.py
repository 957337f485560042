"""`vggunet predict` and `vggunet evaluate` for volume models (a saved model with 5D input).

Whole scans are predicted with `predict_volume` (sliding window); labels are written as NIfTI
with the scan's affine, scores as the lab's per-class table (and JSON), and a slice view PNG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vggunet.cli.volume_args import volume_cases
from vggunet.console import resolve_say
from vggunet.errors import CliError


def is_volume_model(model: Any) -> bool:
    """Whether a loaded model takes volumes (5D input).

    Args:
        model: a Keras model.

    Returns:
        True for `(B, C, H, W, D)` / `(B, H, W, D, C)` inputs.
    """
    return len(model.input_shape) == 5


def label_mode_of(model: Any) -> str:
    """"multilabel" for a sigmoid head (the lab's), else "index" (softmax or logits).

    Args:
        model: a volume model.

    Returns:
        The label mode its outputs are read with.
    """
    activation = getattr(model.layers[-1], "activation", None)
    return "multilabel" if getattr(activation, "__name__", "") == "sigmoid" else "index"


def _input_cases(args: argparse.Namespace, source: Path) -> list:
    """The cases of `--input`: one volume file, a data root or BraTS case folder (any layout),
    or a plain folder of volume files (one case each, no labels)."""
    from vggunet.data.volume_cases import VolumeCase, find_volume_cases
    from vggunet.data.volume_io import H5_SUFFIXES, volume_stem, volume_suffix
    from vggunet.errors import DataError

    if source.is_file():
        return [VolumeCase(volume_stem(source), (source,),
                           source if volume_suffix(source) in H5_SUFFIXES else None)]
    options = dict(modalities=args.modalities, label_suffix=args.label_suffix)
    try:
        return find_volume_cases(source, layout=args.layout, **options)
    except DataError:
        has_files = any(volume_suffix(p) is not None for p in source.iterdir())
        if args.layout != "auto" or not has_files:
            raise
    return find_volume_cases(images=source, **options)


def training_standardize(model_path: Path) -> tuple[str, Path] | None:
    """The standardisation of the run that wrote a model, from its `state.json`.

    Prediction must standardise the way training did; a run folder keeps its settings in
    `RUN/state.json` and its models in `RUN/checkpoints/`.

    Args:
        model_path: the saved model (`RUN/checkpoints/best.keras`, or a file beside
            `state.json`).

    Returns:
        (method, the state file), or None when no volume run's state is found.
    """
    for folder in (model_path.parent, model_path.parent.parent):
        state_path = folder / "state.json"
        try:
            data = json.loads(state_path.read_text(encoding="utf-8"))["settings"]["data"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("standardize"), str):
            return data["standardize"], state_path
    return None


def resolve_standardize(args: argparse.Namespace) -> str:
    """`--standardize` if given, else the training run's choice, else the default; says which.

    Args:
        args: parsed `predict`/`evaluate` flags (`--model`, `--standardize`).

    Returns:
        The method.
    """
    from vggunet.training.settings import VolumeDataSettings

    if args.standardize is not None:
        return args.standardize
    found = training_standardize(Path(args.model))
    method = found[0] if found else VolumeDataSettings().standardize
    resolve_say(not args.quiet)(f"standardize: {method} " + (
        f"(the training run's, from {found[1]})" if found else
        "(the default: no training state.json found beside the model)"))
    return method


def _window_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(patch=args.patch, overlap=args.patch_overlap, blend=args.blend,
                batch_size=args.window_batch, standardize=args.standardize, tta=args.tta)


def predict_volumes(args: argparse.Namespace, model: Any, source: Path, out: Path) -> int:
    """Predicts every volume of `--input` and writes `<name>.nii.gz` label maps to `--out`.

    Args:
        args: parsed `predict` flags.
        model: the loaded volume model.
        source: `--input` (a volume file, a folder of them, or a data root).
        out: the output folder.

    Returns:
        The exit status (0).
    """
    from vggunet.data.volume_cases import load_case
    from vggunet.inference.volume import predict_volume, volume_labels
    from vggunet.inference.volume_outputs import reference_affine, save_volume

    say = resolve_say()
    args.standardize = resolve_standardize(args)
    mode = "threshold" if label_mode_of(model) == "multilabel" else "argmax"
    written = []
    for case in _input_cases(args, source):
        image, _ = load_case(case)
        probs = predict_volume(model, image, verbose=not args.quiet, **_window_options(args))
        labels = volume_labels(probs, mode=mode)
        affine = reference_affine(case.images[0])
        written.append(save_volume(labels, out / f"{case.name}.nii.gz", affine))
        if args.probabilities:
            written.append(save_volume(probs, out / f"{case.name}_probabilities.npy"))
        if args.slices:
            from vggunet.plots_volume import plot_volume_slices

            written.append(plot_volume_slices(image, prediction=labels,
                                              path=out / f"{case.name}_slices.png"))
        say(f"{case.name}: {' '.join(map(str, labels.shape))} voxels -> {written[-1]}")
    say(f"wrote {len(written)} file(s) to {out}")
    return 0


def evaluate_volumes_command(args: argparse.Namespace, model: Any) -> int:
    """Scores a volume model on labelled volumes: the lab's per-class table, JSON, slice PNG.

    Args:
        args: parsed `evaluate` flags.
        model: the loaded volume model.

    Returns:
        The exit status (0).
    """
    from vggunet.data.volume_cases import load_case
    from vggunet.volume_evaluation import evaluate_volumes, format_volume_scores

    cases = volume_cases(args)
    if not cases:
        raise CliError("no data: give --data DIR or --images DIR --masks DIR")
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    say = resolve_say(not args.quiet)
    say(f"evaluating {model.name} on {len(cases)} volume(s)")
    args.standardize = resolve_standardize(args)
    result = evaluate_volumes(model, cases, label_mode=label_mode_of(model),
                              class_names=names, out_json=args.out, verbose=not args.quiet,
                              **_window_options(args))
    resolve_say()(format_volume_scores(result))
    if args.slices:
        from vggunet.inference.volume import predict_volume, volume_labels
        from vggunet.plots_volume import plot_volume_slices

        chosen = next((c for c in cases if c.name == args.slice_case), None) \
            if args.slice_case else cases[0]
        if chosen is None:
            raise CliError(f"--slice-case {args.slice_case!r} is not among the cases: "
                           f"{', '.join(c.name for c in cases[:10])}")
        image, label = load_case(chosen)
        mode = "threshold" if label_mode_of(model) == "multilabel" else "argmax"
        probs = predict_volume(model, image, verbose=False, **_window_options(args))
        path = plot_volume_slices(image, label=label, prediction=volume_labels(probs, mode=mode),
                                  path=args.slices, class_names=names)
        resolve_say()(f"slice view of {chosen.name}: {path}")
    return 0


def add_volume_output_args(parser: argparse.ArgumentParser, *, evaluate: bool) -> None:
    """Flags of `predict`/`evaluate` that only volume models use.

    Args:
        parser: the subcommand's parser, changed in place.
        evaluate: add `evaluate`'s slice-view flags (else `predict`'s).
    """
    from vggunet.cli.args import positive_int

    g = parser.add_argument_group("volume outputs")
    g.add_argument("--window-batch", type=positive_int, default=2, metavar="N",
                   help="volume models: windows per forward pass (bounds memory; default 2)")
    if evaluate:
        g.add_argument("--tta", action="store_true",
                       help="test-time augmentation: 2D models average each image with its "
                            "left-right mirror; volume models the 8 flips of the three axes")
        g.add_argument("--slices", default=None, metavar="PNG",
                       help="volume models: write a slice view (axial, coronal, sagittal: "
                            "image, true and predicted labels) of one case here")
        g.add_argument("--slice-case", default=None, metavar="NAME",
                       help="the case of --slices (default: the first)")
    else:
        g.add_argument("--slices", action="store_true",
                       help="volume models: also write NAME_slices.png per case")
        g.add_argument("--probabilities", action="store_true",
                       help="volume models: also write NAME_probabilities.npy (H, W, D, K)")
