"""Finding, loading and validating the cases of a volume data set.

A case is one scan: its image file(s) and label file (:class:`VolumeCase`). Layouts
(:data:`VOLUME_LAYOUTS`):

* ``decathlon``: ``root/imagesTr/NAME.nii.gz`` + ``root/labelsTr/NAME.nii.gz`` (Medical
  Segmentation Decathlon; a 4D image holds its channels last).
* ``brats``: one folder per case, one file per modality (``CASE_flair.nii.gz``, ...) and one
  for the labels (``CASE_seg.nii.gz``); modalities are stacked into channels in the given order.
* ``folders``: an ``images`` and a ``labels`` folder paired by name (``.nii``, ``.nii.gz``,
  ``.npy``; a label may carry ``_<label_suffix>``).
* ``h5``: a folder of the lab's ``.h5`` patch files (image and label in one file).

Pairing looks at names only; :func:`validate_volume_cases` reads every case once, up front, so a
bad file is a :class:`~vggunet.errors.DataError` naming it before training starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vggunet import choices
from vggunet.checks import check_choice, check_int
from vggunet.data.pairs import TWO_FOLDER_NAMES, _natural_key, _short_list
from vggunet.data.volume_io import (H5_SUFFIXES, VOLUME_SUFFIXES, image_volume, label_volume,
                                    read_h5_patch, read_volume, volume_stem, volume_suffix)
from vggunet.errors import ArgumentError, DataError

__all__ = [
    "BRATS_MODALITIES",
    "VOLUME_LAYOUTS",
    "VolumeCase",
    "VolumeSetInfo",
    "check_volume_pair",
    "find_volume_cases",
    "load_case",
    "validate_volume_cases",
]

# Option lists from vggunet.choices (shared with the CLI): layouts, and the BraTS modality
# file suffixes in channel order (the Decathlon's FLAIR, T1w, T1gd, T2w).
VOLUME_LAYOUTS = choices.VOLUME_LAYOUTS
BRATS_MODALITIES = choices.BRATS_MODALITIES

_LABEL_FOLDERS = ("labelsTr", "labels", "label", "masks", "mask", "seg")


@dataclass(frozen=True)
class VolumeCase:
    """One scan of a volume data set.

    Attributes:
        name: the case name (file stem or folder name).
        images: the image file, or one file per modality in channel order.
        label: the label file (the image file itself for ``.h5`` patches), or None.
    """

    name: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass
class VolumeSetInfo:
    """What :func:`validate_volume_cases` learnt while reading every case.

    Attributes:
        num_cases: the number of cases.
        num_classes: the number of classes.
        channels: image channels (the same for every case).
        shapes: spatial shape (H, W, D) -> number of cases of that shape.
        class_voxel_counts: int64 (num_classes,) labelled voxels per class.
    """

    num_cases: int
    num_classes: int
    channels: int
    shapes: dict[tuple[int, int, int], int] = field(default_factory=dict)
    class_voxel_counts: np.ndarray | None = None


def _volume_files(folder: Path, role: str, suffixes: Sequence[str]) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{role} folder {folder} does not exist or is not a directory")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        if path.name.startswith(".") or not path.is_file() or volume_suffix(path) not in suffixes:
            continue
        stem = volume_stem(path)
        if stem in files:
            raise DataError(f"{role} folder {folder} has two files named {stem!r}: "
                            f"{files[stem].name} and {path.name}; keep one")
        files[stem] = path
    if not files:
        raise DataError(f"{role} folder {folder} has no volume files ({', '.join(suffixes)})")
    return files


def _unpaired_error(image_dir: Path, label_dir: Path, images: list[str],
                    labels: list[str]) -> DataError:
    parts = []
    if images:
        parts.append(f"{len(images)} image(s) in {image_dir} have no label in {label_dir}: "
                     f"{_short_list(images)}")
    if labels:
        parts.append(f"{len(labels)} label(s) in {label_dir} have no image in {image_dir}: "
                     f"{_short_list(labels)}")
    return DataError("; ".join(parts))


def _pair_folders(image_dir: Path, label_dir: Path | None, label_suffix: str,
                  suffixes: Sequence[str] = VOLUME_SUFFIXES) -> list[VolumeCase]:
    images = _volume_files(Path(image_dir), "image", suffixes)
    if label_dir is None:
        return [VolumeCase(stem, (path,), None) for stem, path in images.items()]
    labels = _volume_files(Path(label_dir), "label", suffixes)
    paired: dict[str, Path] = {}
    unpaired_labels = []
    tail = f"_{label_suffix}" if label_suffix else None
    for stem, path in labels.items():
        key = stem[: -len(tail)] if tail and stem.endswith(tail) and stem not in images else stem
        if key in images and key not in paired:
            paired[key] = path
        else:
            unpaired_labels.append(path.name)
    unpaired_images = [path.name for stem, path in images.items() if stem not in paired]
    if unpaired_images or unpaired_labels:
        raise _unpaired_error(Path(image_dir), Path(label_dir), unpaired_images, unpaired_labels)
    return [VolumeCase(stem, (path,), paired[stem]) for stem, path in images.items()]


def _brats_case(folder: Path, modalities: Sequence[str], label_suffix: str) -> VolumeCase:
    by_tail: dict[str, Path] = {}
    for path in folder.iterdir():
        suffix = volume_suffix(path)
        if path.is_file() and suffix is not None and suffix not in H5_SUFFIXES:
            tail = volume_stem(path).rsplit("_", 1)[-1].lower()
            by_tail.setdefault(tail, path)
    missing = [m for m in modalities if m.lower() not in by_tail]
    if missing:
        raise DataError(f"case folder {folder} has no file for modality "
                        f"{', '.join(map(repr, missing))} (expected CASE_<modality>.nii.gz for "
                        f"each of {tuple(modalities)})")
    images = tuple(by_tail[m.lower()] for m in modalities)
    return VolumeCase(folder.name, images, by_tail.get(label_suffix.lower()))


def _brats_cases(root: Path, modalities: Sequence[str], label_suffix: str) -> list[VolumeCase]:
    if not modalities:
        raise DataError("the brats layout needs at least one modality")
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: _natural_key(p.name))
    if not folders and _has_modality_files(root, modalities):
        folders = [root]  # the root is one case's folder
    cases = [_brats_case(folder, modalities, label_suffix) for folder in folders]
    if not cases:
        raise DataError(f"brats layout: {root} has no case folders")
    unlabelled = [case.name for case in cases if case.label is None]
    if unlabelled and len(unlabelled) < len(cases):
        raise DataError(f"{len(unlabelled)} case folder(s) in {root} have no "
                        f"CASE_{label_suffix} label file: {_short_list(unlabelled)}")
    return cases


def _has_modality_files(folder: Path, modalities: Sequence[str]) -> bool:
    tails = {m.lower() for m in modalities}
    return any(f.is_file() and volume_stem(f).rsplit("_", 1)[-1].lower() in tails
               for f in folder.iterdir())


def _detect_layout(root: Path, modalities: Sequence[str]) -> str:
    if (root / "imagesTr").is_dir():
        return "decathlon"
    if any(volume_suffix(p) in H5_SUFFIXES for p in root.iterdir()):
        return "h5"
    if any((root / image).is_dir() and (root / label).is_dir()
           for image, label in TWO_FOLDER_NAMES):
        return "folders"
    folders = [p for p in root.iterdir() if p.is_dir()]
    if any(_has_modality_files(folder, modalities) for folder in folders):
        return "brats"
    if not folders and _has_modality_files(root, modalities):
        return "brats"  # one case's folder
    found = _short_list(sorted((p.name + "/" * p.is_dir() for p in root.iterdir()),
                               key=_natural_key), 20)
    raise DataError(f"no known volume layout under {root}; found: {found or 'nothing'}. "
                    "Expected imagesTr/+labelsTr/ (decathlon), .h5 patch files, images/+labels/ "
                    "(folders), or one folder per case with CASE_<modality>.nii.gz (brats)")


def _two_folders(root: Path) -> tuple[Path, Path]:
    for image, label in TWO_FOLDER_NAMES:
        if (root / image).is_dir() and (root / label).is_dir():
            return root / image, root / label
    raise DataError(f"folders layout: {root} has no pair of image and label folders "
                    f"({', '.join('/'.join(p) for p in TWO_FOLDER_NAMES)})")


def find_volume_cases(root: str | os.PathLike | None = None, *,
                      images: str | os.PathLike | None = None,
                      labels: str | os.PathLike | None = None, layout: str = "auto",
                      modalities: Sequence[str] = BRATS_MODALITIES,
                      label_suffix: str = "seg") -> list[VolumeCase]:
    """The cases of a volume data set, in natural name order.

    Args:
        root: the data-set folder (any layout), or None with `images`.
        images: an image folder (the ``folders`` layout without `root`).
        labels: its label folder (None: cases without labels).
        layout: one of :data:`VOLUME_LAYOUTS`; ``"auto"`` recognises it.
        modalities: the ``brats`` layout's modality suffixes, in channel order.
        label_suffix: the ``brats`` label file's suffix (``CASE_seg``); in the ``folders``
            layout a label may be named ``NAME_<label_suffix>``.

    Returns:
        The cases.

    Raises:
        DataError: no known layout, missing folders or files, unpaired files (listed).
        ArgumentError: an unknown layout, or neither `root` nor `images`.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for folder in ("imagesTr", "labelsTr"):
        ...     (root / folder).mkdir()
        ...     (root / folder / "lung_1.nii.gz").touch()
        >>> [(c.name, c.images[0].parent.name, c.label.parent.name)
        ...  for c in find_volume_cases(root)]
        [('lung_1', 'imagesTr', 'labelsTr')]
    """
    check_choice(layout, VOLUME_LAYOUTS, "layout")
    if root is None:
        if images is None:
            raise ArgumentError("find_volume_cases needs a root folder or an images folder")
        if layout not in ("auto", "folders", "h5"):
            raise ArgumentError(f"layout {layout!r} needs a root folder, not images=/labels=")
        if layout != "h5":
            return _pair_folders(Path(images), None if labels is None else Path(labels),
                                 label_suffix)
        root = images  # .h5 patches hold their labels: the folder is the data set
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a directory")
    if layout == "auto":
        layout = _detect_layout(root, modalities)
    if layout == "decathlon":
        label_dir = root / "labelsTr"
        return _pair_folders(root / "imagesTr", label_dir if label_dir.is_dir() else None,
                             label_suffix)
    if layout == "brats":
        return _brats_cases(root, modalities, label_suffix)
    if layout == "h5":
        return [VolumeCase(stem, (path,), path)
                for stem, path in _volume_files(root, "h5", H5_SUFFIXES).items()]
    return _pair_folders(*_two_folders(root), label_suffix)


def load_case(case: VolumeCase, *, h5_keys: tuple[str, str] = ("x", "y"),
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads a case: image (H, W, D, C) float32, label (H, W, D) int32 (None without one).

    Args:
        case: the case.
        h5_keys: the image and label dataset names of ``.h5`` patch files.

    Returns:
        (image, label); modalities stacked into channels in the case's order.

    Raises:
        DataError: an unreadable file, or modalities / image and label of different shapes
            (the file is named).
    """
    first = case.images[0]
    if len(case.images) == 1 and volume_suffix(first) in H5_SUFFIXES:
        return read_h5_patch(first, image_key=h5_keys[0],
                             label_key=None if case.label is None else h5_keys[1])
    parts = [image_volume(read_volume(path), path) for path in case.images]
    for path, part in zip(case.images[1:], parts[1:]):
        if part.shape[:3] != parts[0].shape[:3]:
            raise DataError(f"image {path} has spatial shape {part.shape[:3]}, but {first} "
                            f"has {parts[0].shape[:3]}: the modalities of case {case.name!r} "
                            "must have one shape")
    image = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
    label = None
    if case.label is not None:
        label = label_volume(read_volume(case.label, what="label"), case.label)
    check_volume_pair(image, label, where=case.label or first)
    return image, label


def check_volume_pair(image: np.ndarray, label: np.ndarray | None, *,
                      num_classes: int | None = None,
                      channels: int | None = None, where: str | os.PathLike = "volume",
                      image_where: str | os.PathLike | None = None) -> None:
    """Checks one loaded (image, label) pair: shapes, channel count and label values.

    Args:
        image: (H, W, D, C) image.
        label: (H, W, D) labels, or None.
        num_classes: labels must lie in [0, num_classes) (None: not checked).
        channels: the image must have this many channels (None: not checked).
        where: the file (or case) named in messages (the label file).
        image_where: the image file(s) named in the channel message (None: `where`).

    Raises:
        DataError: a shape mismatch, a wrong channel count, or labels out of range.

    Example:
        >>> check_volume_pair(np.zeros((2, 2, 2, 1)), np.full((2, 2, 2), 3), num_classes=3,
        ...                   where="seg.nii")
        Traceback (most recent call last):
        ...
        vggunet.errors.DataError: label seg.nii holds values [3] outside [0, 3) (num_classes=3)
    """
    if channels is not None and image.shape[-1] != channels:
        raise DataError(f"image {image_where or where} has {image.shape[-1]} channel(s); "
                        f"expected {channels}")
    if label is None:
        return
    if label.shape != image.shape[:3]:
        raise DataError(f"label {where} has shape {label.shape}, but its image has spatial "
                        f"shape {image.shape[:3]}")
    if num_classes is not None:
        bad = label[(label < 0) | (label >= num_classes)]
        if bad.size:
            values = np.unique(bad)
            raise DataError(f"label {where} holds values {values[:10].tolist()} outside "
                            f"[0, {num_classes}) (num_classes={num_classes})")


def validate_volume_cases(cases: Sequence[VolumeCase], num_classes: int,
                          channels: int | None = None, *,
                          h5_keys: tuple[str, str] = ("x", "y")) -> VolumeSetInfo:
    """Reads every case once and checks it; gathers shapes and voxels per class.

    Args:
        cases: the cases (e.g. from :func:`find_volume_cases`).
        num_classes: labels must lie in [0, num_classes).
        channels: the image channel count every case must have (None: the first case's).
        h5_keys: passed to :func:`load_case`.

    Returns:
        The :class:`VolumeSetInfo`.

    Raises:
        DataError: no cases, an unreadable file, a shape mismatch, a wrong channel count or
            label values out of range (the file is named).
    """
    num_classes = check_int(num_classes, "num_classes")
    if not cases:
        raise DataError("no volume cases to validate")
    counts = np.zeros(num_classes, np.int64)
    info = VolumeSetInfo(len(cases), num_classes, channels or 0)
    for case in cases:
        image, label = load_case(case, h5_keys=h5_keys)
        if channels is None:
            channels = info.channels = image.shape[-1]
        check_volume_pair(image, label, num_classes=num_classes, channels=channels,
                          where=case.label or case.images[0],
                          image_where=", ".join(str(p) for p in case.images))
        shape = tuple(int(s) for s in image.shape[:3])
        info.shapes[shape] = info.shapes.get(shape, 0) + 1
        if label is not None:
            counts += np.bincount(label.ravel(), minlength=num_classes)
    info.class_voxel_counts = counts
    return info
