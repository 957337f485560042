"""Reading volume files: NIfTI (nibabel), ``.npy`` arrays and the 3D U-Net lab's ``.h5`` patches.

Everything comes out in vggunet's one volume layout: image (H, W, D, C) float32, channels last;
label (H, W, D) int32 class indices (0 = background). A 3D NIfTI image is one channel, a 4D one
holds its channels last (the Medical Segmentation Decathlon's layout). The lab's ``.h5`` patch
files hold the image channels first (``x``: (C, H, W, D)) and the label one-hot channels last
(``y``: (H, W, D, K)); they are moved and argmax-ed here, once.

NumPy, nibabel and h5py only: no TensorFlow or Keras. Every failure is a
:class:`~vggunet.errors.DataError` naming the file.

Example:
    >>> volume_stem("case_001.nii.gz"), volume_suffix("case_001.nii.gz")
    ('case_001', '.nii.gz')
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from vggunet.data.images import NPY_SUFFIX, read_npy
from vggunet.errors import DataError

__all__ = [
    "H5_SUFFIXES",
    "NIFTI_SUFFIXES",
    "VOLUME_SUFFIXES",
    "image_volume",
    "label_volume",
    "read_h5_patch",
    "read_nifti",
    "read_volume",
    "volume_stem",
    "volume_suffix",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
"""NIfTI file suffixes (case-insensitive), read with nibabel."""

VOLUME_SUFFIXES = NIFTI_SUFFIXES + (NPY_SUFFIX,)
"""Files read as one volume (image or label) by :func:`read_volume`."""

H5_SUFFIXES = (".h5", ".hdf5")
"""The lab's patch files: image and label in one HDF5 file."""

# nibabel reports a damaged file through its own ImageFileError (caught where nibabel is
# imported), gzip/zlib errors,
# a short read (EOFError, struct.error) or OSError; all mean "this file cannot be read".
_READ_FAILURES = (ValueError, OSError, EOFError, struct.error, zlib.error, gzip.BadGzipFile,
                  MemoryError, KeyError, TypeError)


def volume_suffix(path: str | os.PathLike) -> str | None:
    """The volume suffix of a file name (``.nii.gz``, ``.nii``, ``.npy``, ``.h5``), or None.

    Args:
        path: a file name or path.

    Returns:
        The matching suffix in lower case, or None for other files.
    """
    name = Path(path).name.lower()
    for suffix in VOLUME_SUFFIXES + H5_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def volume_stem(path: str | os.PathLike) -> str:
    """A volume file's name without its (double) suffix: ``a.nii.gz`` -> ``a``.

    Args:
        path: a file name or path.

    Returns:
        The name without the suffix `volume_suffix` finds (without the last suffix otherwise).
    """
    suffix = volume_suffix(path)
    name = Path(path).name
    return name[: -len(suffix)] if suffix else Path(path).stem


def read_nifti(path: str | os.PathLike, *, what: str = "image") -> np.ndarray:
    """The stored array of a NIfTI file (``.nii``/``.nii.gz``), its scaling applied.

    Args:
        path: the file.
        what: what the file is ("image", "label"), for messages.

    Returns:
        The array (nibabel's ``dataobj``: the stored dtype unless the header scales values).

    Raises:
        DataError: the file is missing, not NIfTI, truncated or corrupt.
    """
    import nibabel  # noqa: PLC0415 - only volume readers need it

    path = Path(path)
    if not path.is_file():
        raise DataError(f"cannot read {what}: {path} does not exist or is not a file")
    try:
        return np.asanyarray(nibabel.load(path).dataobj)
    except (*_READ_FAILURES, nibabel.filebasedimages.ImageFileError) as exc:
        raise DataError(f"cannot read {what}: {path} is not a readable NIfTI file "
                        f"({type(exc).__name__}: {exc})") from exc


def read_volume(path: str | os.PathLike, *, what: str = "image") -> np.ndarray:
    """The array stored in a volume file: NIfTI through nibabel, ``.npy`` without pickle.

    Args:
        path: a ``.nii``, ``.nii.gz`` or ``.npy`` file.
        what: what the file is ("image", "label"), for messages.

    Returns:
        The stored array, shape and dtype unchanged.

    Raises:
        DataError: unknown suffix, or the file cannot be read.
    """
    suffix = volume_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return read_nifti(path, what=what)
    if suffix == NPY_SUFFIX:
        return read_npy(path, what=what)
    raise DataError(f"cannot read {what}: {path} is not a volume file "
                    f"({', '.join(VOLUME_SUFFIXES)})")


def image_volume(array: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """An image array as (H, W, D, C) float32: 3D is one channel, 4D holds channels last.

    Args:
        array: the stored array.
        path: its file, for messages.

    Returns:
        The float32 volume.

    Raises:
        DataError: not 3D/4D, empty, or holding NaN/inf values.

    Example:
        >>> image_volume(np.zeros((4, 5, 6), np.uint8), "a.nii").shape
        (4, 5, 6, 1)
    """
    if array.ndim not in (3, 4) or 0 in array.shape:
        raise DataError(f"image {path} has shape {array.shape}; a volume image must be "
                        "(H, W, D) or (H, W, D, C)")
    image = np.asarray(array, np.float32)
    if not np.isfinite(image).all():
        raise DataError(f"image {path} holds NaN or infinite values")
    return image[..., None] if image.ndim == 3 else image


def label_volume(array: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """A label array as (H, W, D) int32 class indices (a trailing axis of 1 is dropped).

    Args:
        array: the stored array (integers, or floats holding whole numbers).
        path: its file, for messages.

    Returns:
        The int32 labels.

    Raises:
        DataError: not 3D, or holding values that are not whole numbers.

    Example:
        >>> label_volume(np.ones((2, 2, 2, 1), np.float32), "seg.nii").dtype
        dtype('int32')
    """
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or 0 in array.shape:
        raise DataError(f"label {path} has shape {array.shape}; a volume label must be "
                        "(H, W, D) class indices")
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.integer)):
        values = np.asarray(array, np.float64)
        if not (np.isfinite(values).all() and (values == np.round(values)).all()):
            raise DataError(f"label {path} holds values that are not whole numbers; labels "
                            "must be class indices")
    return np.asarray(array, np.int32)


def _h5_dataset(file, key: str, path: Path, what: str) -> np.ndarray:
    if key not in file:
        raise DataError(f"cannot read {what}: {path} has no dataset {key!r} (it holds: "
                        f"{', '.join(sorted(file.keys())) or 'nothing'})")
    return np.asarray(file[key][()])


def read_h5_patch(path: str | os.PathLike, *, image_key: str = "x", label_key: str | None = "y",
                  image_channels_first: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads one of the lab's ``.h5`` patch files: image and label in one file.

    Args:
        path: the ``.h5`` file.
        image_key: the image dataset, (C, H, W, D) (or (H, W, D, C) with
            ``image_channels_first=False``; (H, W, D) is one channel).
        label_key: the label dataset: one-hot (H, W, D, K) (argmax-ed) or (H, W, D) class
            indices; None reads no label.
        image_channels_first: whether a 4D image holds its channels first (the lab's layout).

    Returns:
        image (H, W, D, C) float32 and label (H, W, D) int32 (None without `label_key`).

    Raises:
        DataError: the file cannot be read, a dataset is missing, or the shapes do not fit.
    """
    import h5py  # noqa: PLC0415 - only the h5 reader needs it

    path = Path(path)
    if not path.is_file():
        raise DataError(f"cannot read image: {path} does not exist or is not a file")
    try:
        with h5py.File(path, "r") as file:
            image = _h5_dataset(file, image_key, path, "image")
            label = None if label_key is None else _h5_dataset(file, label_key, path, "label")
    except DataError:
        raise
    except _READ_FAILURES as exc:
        raise DataError(f"cannot read image: {path} is not a readable HDF5 file "
                        f"({type(exc).__name__}: {exc})") from exc
    if image.ndim == 4 and image_channels_first:
        image = np.moveaxis(image, 0, -1)
    image = image_volume(image, path)
    if label is not None:
        # One-hot labels (the lab's `y`) have a class axis that the image's spatial shape lacks.
        if label.ndim == 4 and label.shape[:3] == image.shape[:3] and label.shape[-1] > 1:
            label = np.argmax(label, axis=-1)
        label = label_volume(label, path)
    return image, label
