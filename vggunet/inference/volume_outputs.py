"""Writing predicted volumes: label maps as NIfTI (with the scan's geometry) or NumPy files."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from vggunet.data.volume_io import NIFTI_SUFFIXES, volume_suffix
from vggunet.errors import ArgumentError, OutputError
from vggunet.fileio import atomic_write

__all__ = ["is_nifti", "reference_affine", "save_volume"]


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether `path` names a NIfTI file (`.nii` or `.nii.gz`).

    Args:
        path: a file name.

    Returns:
        True for NIfTI names.

    Example:
        >>> is_nifti("case_001.nii.gz"), is_nifti("case_001.npy")
        (True, False)
    """
    return volume_suffix(path) in NIFTI_SUFFIXES


def reference_affine(path: str | os.PathLike) -> np.ndarray | None:
    """The voxel-to-world affine of a NIfTI scan, so predictions overlay it in any viewer.

    Args:
        path: the scan the prediction was made from.

    Returns:
        Its 4×4 affine, or None for files without one (NumPy, h5).
    """
    if not is_nifti(path):
        return None
    import nibabel

    return np.asarray(nibabel.load(str(path)).affine, dtype="float64")


def _nifti_bytes(volume: np.ndarray, affine: np.ndarray | None, gzipped: bool) -> bytes:
    import nibabel

    image = nibabel.Nifti1Image(volume, np.eye(4) if affine is None else affine)
    data = image.to_bytes()
    if not gzipped:
        return data
    buffer = io.BytesIO()
    # mtime 0: the same prediction gives the same file bytes.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as stream:
        stream.write(data)
    return buffer.getvalue()


def save_volume(volume: Any, path: str | os.PathLike,
                affine: np.ndarray | None = None) -> Path:
    """Writes a label map or probability volume atomically, as NIfTI or `.npy` by suffix.

    Args:
        volume: `(H, W, D)` labels (written as uint8 when they fit, else int16/int32) or
            `(H, W, D, K)` probabilities (float32).
        path: `.nii`, `.nii.gz` or `.npy`.
        affine: the NIfTI affine (the scan's, see `reference_affine`); identity when None.

    Returns:
        The written path.

    Example:
        >>> import tempfile
        >>> path = save_volume(np.ones((2, 3, 4), "int64"), Path(tempfile.mkdtemp()) / "a.npy")
        >>> np.load(path).dtype, np.load(path).shape
        (dtype('uint8'), (2, 3, 4))
    """
    array = np.asarray(volume)
    if array.ndim not in (3, 4):
        raise ArgumentError(f"save_volume needs (H, W, D) or (H, W, D, K), got {array.shape}")
    if array.dtype.kind in "iub":
        high = int(array.max(initial=0))
        array = array.astype("uint8" if high < 256 else "int16" if high < 32768 else "int32")
    else:
        array = array.astype("float32")
    path = Path(path)
    if is_nifti(path):
        data = _nifti_bytes(array, affine, str(path).lower().endswith(".gz"))
        return atomic_write(path, data, error=OutputError, what="volume ")
    if path.suffix.lower() == ".npy":
        return atomic_write(path, lambda stream: np.save(stream, array), error=OutputError,
                            what="volume ")
    raise ArgumentError(f"volume output {path} must end in .nii, .nii.gz or .npy")
