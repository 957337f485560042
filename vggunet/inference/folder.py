"""Predicting image files into masks and overlays: one file, or every image of a folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from vggunet.console import Progress
from vggunet.data.images import IMAGE_SUFFIXES, check_channels, read_image
from vggunet.errors import PredictionError
from vggunet.inference.labels import scores_to_labels
from vggunet.inference.outputs import _make_output_folder, save_mask_png, save_overlay
from vggunet.inference.predict import _check_mirror_pad, _model_input, predict_proba
from vggunet.inference.tiling import _pair, default_overlap, predict_tiled


def _inside(folder: Path, name: str) -> Path:
    target = (folder / name).resolve()
    if target.parent != folder:
        raise PredictionError(f"output name {name!r} would be written outside '{folder}'.")
    return target


def _checked_channels(model: Any, image: Any, source: Path | str | os.PathLike,
                      channels: int) -> None:
    """Refuses an image whose channel count the model cannot take, naming its file."""
    expected = _model_input(model)[2]
    got = 1 if image.ndim == 2 else int(image.shape[-1])
    if got not in (1, expected):  # grey is repeated to any count by predict_proba
        raise PredictionError(
            f"{source} was read with {got} channels (channels={channels}) but the model expects "
            f"{expected}; read it with channels={expected} (CLI: --channels {expected}), from "
            f"files with {expected} channels (or grey/RGB files for a 1- or 3-channel model)."
        )


def _checked_class_names(model: Any, class_names: Sequence[str] | None) -> None:
    """Refuses a legend whose names do not match the model's classes (1 output: 2 classes)."""
    if class_names is None:
        return
    outputs = int(model.output_shape[-1])
    classes = 2 if outputs == 1 else outputs
    if len(class_names) != classes:
        raise PredictionError(f"class_names has {len(class_names)} names but model "
                              f"{model.name!r} predicts {classes} classes; give one name per "
                              f"class (CLI: --class-names).")


def _displayed(image: Any) -> Any:
    """What an overlay shows of a C-channel image: C = 2 its first channel, C > 4 the first 3."""
    if image.ndim == 3 and image.shape[-1] == 2:
        return image[..., 0]
    if image.ndim == 3 and image.shape[-1] > 4:
        return image[..., :3]
    return image  # grey, RGB, and RGBA-like 4 channels (the first three) as save_overlay does


def predict_image_file(model: Any, source: str | os.PathLike, mask_path: str | os.PathLike,
                       overlay_path: str | os.PathLike | None = None, *,
                       tile: int | Sequence[int] | None = None, overlap: int | None = None,
                       tta: bool = False, mirror_pad: int = 0, channels: int = 3,
                       from_logits: bool = False,
                       palette: Sequence[Sequence[int]] | None = None,
                       verbose: bool = True,
                       class_names: Sequence[str] | None = None) -> list[Path]:
    """Predicts one image file and writes its class-index mask PNG (and an overlay PNG).

    Args:
        model: a Keras segmentation model.
        source: the image file (read with `read_image`).
        mask_path: where the mask PNG goes (`save_mask_png`).
        overlay_path: where the overlay PNG goes (`save_overlay`); None writes none.
        tile: predict in tiles of this size (int or (H, W)) with `predict_tiled`.
        overlap: tile overlap in pixels (default `default_overlap(tile)`); needs `tile`.
        tta: average over the 8 flips/rotations.
        mirror_pad: pixels of mirrored context added on each side (see `predict_proba`).
        channels: read the image as 1 (grey), 3 (RGB) or another count its file has (an
            (H, W, C) .npy array; LA = 2, RGBA = 4), see `read_image`.
        from_logits: the model outputs logits.
        palette: RGB colours per class for the overlay (drawn over the image's first channel
            when it has 2, its first three when it has more).
        verbose: with `tile`, show a progress bar over the tile batches of a large image.
        class_names: one name per class: the overlay gets a legend (`save_overlay`).

    Returns:
        The written paths: the mask, then the overlay if any.
    """
    _checked_class_names(model, class_names)
    image = read_image(source, channels)
    _checked_channels(model, image, source, channels)
    if tile is None:
        proba = predict_proba(model, image, tta=tta, from_logits=from_logits,
                              mirror_pad=mirror_pad)
    else:
        proba = predict_tiled(model, image, tile=tile, tta=tta, from_logits=from_logits,
                              overlap=default_overlap(tile) if overlap is None else overlap,
                              mirror_pad=mirror_pad, verbose=verbose)
    # predict_proba/predict_tiled already turned logits into probabilities.
    mask = scores_to_labels(proba)
    written = [save_mask_png(mask, mask_path)]
    if overlay_path is not None:
        written.append(save_overlay(_displayed(image), mask, overlay_path, palette=palette,
                                    class_names=class_names))
    return written


def _plan_outputs(sources: list[Path], out_root: Path,
                  overlay: bool) -> list[tuple[Path, Path, Path | None]]:
    """(source, mask path, overlay path) per image; refuses collisions, overwrites, escapes."""
    inputs = {p.resolve() for p in sources}
    plan: list[tuple[Path, Path, Path | None]] = []
    seen: dict[Path, Path] = {}
    for source in sources:
        names = [f"{source.stem}.png"] + ([f"{source.stem}_overlay.png"] if overlay else [])
        targets = [_inside(out_root, name) for name in names]
        for target in targets:
            if target in seen:
                raise PredictionError(
                    f"'{source.name}' and '{seen[target].name}' would both write '{target.name}'."
                )
            if target in inputs:
                raise PredictionError(
                    f"writing '{target}' would overwrite an input image; use another output folder."
                )
            seen[target] = source
        plan.append((source, targets[0], targets[1] if overlay else None))
    return plan


def predict_folder(model: Any, input_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                   tile: int | Sequence[int] | None = None, tta: bool = False,
                   mirror_pad: int = 0, overlay: bool = True,
                   channels: int = 3, from_logits: bool = False,
                   palette: Sequence[Sequence[int]] | None = None,
                   overlap: int | None = None, verbose: bool = True,
                   class_names: Sequence[str] | None = None) -> list[Path]:
    """Predicts every image in a folder and writes `<stem>.png` masks (and overlays).

    Reads the .png/.jpg/.jpeg/.bmp/.tif/.tiff/.npy files directly in `input_dir` (sorted by
    name, not recursive) and predicts each with `predict_image_file`: `predict_proba`, or
    `predict_tiled` when `tile` is given. It writes into `output_dir` the mask `<stem>.png`
    and, with `overlay`, `<stem>_overlay.png`. Before predicting anything it refuses output
    names that collide (`a.png` and `a.jpg`), would overwrite an input file, or would land
    outside `output_dir`.

    Args:
        model: a Keras segmentation model.
        input_dir: folder of images.
        output_dir: folder for the masks and overlays (created).
        tile: predict in tiles of this size (int or (H, W)) instead of whole images.
        tta: average over the 8 flips/rotations.
        mirror_pad: pixels of mirrored context added on each side (see `predict_proba`).
        overlay: also write `<stem>_overlay.png`.
        channels: read images as 1 (grey), 3 (RGB) or another count their files have.
        from_logits: the model outputs logits.
        palette: RGB colours per class for the overlays.
        overlap: tile overlap in pixels (default `min(64, tile // 4)`); needs `tile`.
        verbose: show a progress bar (count and ETA) over the images.
        class_names: one name per class: the overlays get a legend (`save_overlay`).

    Returns:
        The written paths, in order (mask, then its overlay, per image).
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise PredictionError(f"input folder '{input_dir}' does not exist or is not a folder.")
    channels = check_channels(channels, PredictionError)
    if overlap is not None and tile is None:
        raise PredictionError("overlap needs tile: pass tile= to predict in tiles.")
    options = dict(tile=None if tile is None else _pair(tile, "tile"), overlap=overlap, tta=tta,
                   mirror_pad=_check_mirror_pad(mirror_pad), channels=channels,
                   from_logits=from_logits, palette=palette, class_names=class_names)
    _checked_class_names(model, class_names)
    sources = sorted(p for p in input_dir.iterdir()
                     if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not sources:
        raise PredictionError(f"input folder '{input_dir}' has no images (files ending in "
                              f"{', '.join(sorted(IMAGE_SUFFIXES))}).")
    output_dir = Path(output_dir)
    _make_output_folder(output_dir)
    plan = _plan_outputs(sources, output_dir.resolve(), overlay)
    written: list[Path] = []
    with Progress(len(plan), unit="image", verbose=verbose) as progress:
        for source, mask_path, overlay_path in plan:
            # One bar per folder: no nested per-tile bars.
            written += predict_image_file(model, source, mask_path, overlay_path,
                                          verbose=False, **options)
            progress.advance()
    return written
