"""Predicting every image of a folder into masks and overlays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from vggunet.data.images import IMAGE_SUFFIXES, read_image
from vggunet.errors import OutputError, PredictionError
from vggunet.inference.outputs import save_mask_png, save_overlay
from vggunet.inference.predict import _check_mirror_pad, _mask_from_proba, predict_proba
from vggunet.inference.tiling import _pair, predict_tiled


def _inside(folder: Path, name: str) -> Path:
    target = (folder / name).resolve()
    if target.parent != folder:
        raise PredictionError(f"output name {name!r} would be written outside '{folder}'.")
    return target


def predict_folder(model: Any, input_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                   tile: int | Sequence[int] | None = None, tta: bool = False,
                   mirror_pad: int = 0, overlay: bool = True,
                   channels: int = 3, from_logits: bool = False,
                   palette: Sequence[Sequence[int]] | None = None) -> list[Path]:
    """Predicts every image in a folder and writes `<stem>.png` masks (and overlays).

    Reads the .png/.jpg/.jpeg/.bmp/.tif/.tiff files directly in `input_dir` (sorted by name,
    not recursive) with `read_image`, predicts with `predict_proba` (or `predict_tiled` with
    `overlap = min(64, tile // 4)` when `tile` is given), and writes into `output_dir` the mask
    `<stem>.png` (`save_mask_png`) and, with `overlay`, `<stem>_overlay.png`. Before predicting
    anything it refuses output names that collide (`a.png` and `a.jpg`), would overwrite an input
    file, or would land outside `output_dir`.

    Args:
        model: a Keras segmentation model.
        input_dir: folder of images.
        output_dir: folder for the masks and overlays (created).
        tile: predict in tiles of this size (int or (H, W)) instead of whole images.
        tta: average over the 8 flips/rotations.
        mirror_pad: pixels of mirrored context added on each side (see `predict_proba`).
        overlay: also write `<stem>_overlay.png`.
        channels: read images as 1 (grey) or 3 (RGB) channels.
        from_logits: the model outputs logits.
        palette: RGB colours per class for the overlays.

    Returns:
        The written paths, in order (mask, then its overlay, per image).
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise PredictionError(f"input folder '{input_dir}' does not exist or is not a folder.")
    if channels not in (1, 3):
        raise PredictionError(f"channels must be 1 or 3, got {channels!r}.")
    mirror_pad = _check_mirror_pad(mirror_pad)
    tile_hw = None if tile is None else _pair(tile, "tile")
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the output folder '{output_dir}': {error}") from error
    out_root = output_dir.resolve()

    sources = sorted(p for p in input_dir.iterdir()
                     if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
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

    written: list[Path] = []
    for source, mask_path, overlay_path in plan:
        image = read_image(source, channels)
        if tile is None:
            proba = predict_proba(model, image, tta=tta, from_logits=from_logits,
                                  mirror_pad=mirror_pad)
        else:
            proba = predict_tiled(model, image, tile=tile, overlap=min(64, min(tile_hw) // 4),
                                  tta=tta, from_logits=from_logits, mirror_pad=mirror_pad)
        mask = _mask_from_proba(proba)
        written.append(save_mask_png(mask, mask_path))
        if overlay_path is not None:
            written.append(save_overlay(image, mask, overlay_path, palette=palette))
    return written
