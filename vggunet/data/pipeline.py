"""Segmentation data: pairing, layouts, mask encodings, validation and tf.data pipelines.

Conventions shared with the rest of vggunet:

* Images leave the pipeline as float32 (B, H, W, C) in the RAW pixel range
  [0, 255] (``scale="unit"`` divides by 255). Grey images are repeated to 3
  channels when ``channels=3``; RGB is converted to grey with ITU-R 601
  luminance when ``channels=1``; alpha is dropped.
* 16-bit greyscale images are accepted and scaled to the 8-bit range
  (value / 257, so 65535 -> 255.0, kept as float); 16-bit masks are read as
  integer class indices unchanged.
* Masks leave as int32 class indices (B, H, W); ``ignore_index`` passes through.
* Every problem with a file raises :class:`DataError` naming the file. Files are
  checked in Python (PIL, with a full decode) before any tf.data graph is built,
  so a bad file never surfaces as a TensorFlow traceback.

Decoding inside tf.data goes through PIL in ``tf.numpy_function`` (one code path
for PNG/JPEG/BMP/TIFF and all mask encodings, identical to :func:`load_image`
and :func:`load_mask`); augmentation runs as TensorFlow ops with stateless
seeds (see :mod:`vggunet.augment`).
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PureWindowsPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from vggunet.errors import ArgumentError, DataError
from vggunet.data.augment import Augment, random_flip, reflect_index

try:  # scipy is optional: exact numpy fallbacks below are used without it.
    from scipy import ndimage as _ndimage
except ImportError:  # pragma: no cover - depends on the environment
    _ndimage = None

__all__ = [
    "DataError",
    "DatasetInfo",
    "Layout",
    "IMAGE_EXTENSIONS",
    "MASK_FORMATS",
    "MASK_SUFFIXES",
    "find_pairs",
    "discover_layout",
    "load_split",
    "read_pairs_list",
    "load_image",
    "load_mask",
    "validate_pairs",
    "class_weights",
    "border_weight_map",
    "make_dataset",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_FORMATS = ("index", "binary", "palette", "channel")
MASK_SUFFIXES = ("_mask", "_masks", "-mask", "_L", "_label", "_labels", "_gt", "_seg",
                 "_annot", "_segmentation")
TWO_FOLDER_NAMES = (("images", "masks"), ("image", "label"), ("images", "labels"),
                    ("image", "mask"), ("img", "mask"), ("imgs", "masks"))
CAMVID_SPLITS = ("train", "val", "test")

Pair = tuple[Path, Path]


# --------------------------------------------------------------------------- pairing


def _natural_key(name: str) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower())
            for t in re.split(r"(\d+)", name) if t]


def _short_list(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return shown + (f" ... and {more} more" if more > 0 else "")


def _list_image_files(folder: Path, role: str) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{role} folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"{role} folder {folder} is not a directory")
    by_stem: dict[str, Path] = {}
    others = []
    for p in folder.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in by_stem:
                raise DataError(f"{role} folder {folder} has two files with the stem "
                                f"{p.stem!r}: {by_stem[p.stem].name} and {p.name}; "
                                "keep one so pairing is unambiguous")
            by_stem[p.stem] = p
        else:
            others.append(p.name)
    if not by_stem:
        found = (f"; it contains only: {_short_list(sorted(others, key=_natural_key))}"
                 if others else " (it is empty)")
        raise DataError(f"{role} folder {folder} has no image files "
                        f"({', '.join(IMAGE_EXTENSIONS)}){found}")
    return by_stem


def _detect_suffix(image_stems: set[str], mask_stems: Iterable[str], mask_dir: Path) -> str:
    mask_stems = list(mask_stems)
    counts = {"": sum(s in image_stems for s in mask_stems)}
    for suf in MASK_SUFFIXES:
        counts[suf] = sum(s.endswith(suf) and s[: -len(suf)] in image_stems
                          for s in mask_stems)
    best = max(counts.values())
    if counts[""] == best:
        return ""  # exact stems win ties: no suffix is the least surprising reading
    winners = [s for s, c in counts.items() if c == best]
    if len(winners) > 1:
        raise DataError(f"cannot tell which mask-name suffix is used in {mask_dir}: "
                        f"{', '.join(map(repr, winners))} each pair {best} masks; "
                        "pass mask_suffix= explicitly")
    return winners[0]


def find_pairs(image_dir: str | Path, mask_dir: str | Path,
               mask_suffix: str | None = None) -> list[Pair]:
    """Pair images and masks by file stem.

    Extensions png/jpg/jpeg/bmp/tif/tiff are recognised case-insensitively;
    hidden files and other files are ignored. A mask stem may carry a suffix
    (``a.png`` <-> ``a_mask.png``).

    Args:
        image_dir: folder of images.
        mask_dir: folder of masks.
        mask_suffix: suffix of mask stems (``""`` for identical stems); None
            detects it among ``MASK_SUFFIXES`` (the one pairing most masks).

    Returns:
        (image_path, mask_path) pairs in natural order of the image names.

    Raises:
        DataError: folder missing or without images, ambiguous suffix, or
            images without masks / masks without images (names listed).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())
        >>> for folder, stem in [("images", "a"), ("images", "b"),
        ...                      ("masks", "a_mask"), ("masks", "b_mask")]:
        ...     (root / folder).mkdir(exist_ok=True)
        ...     (root / folder / f"{stem}.png").touch()
        >>> [(image.name, mask.name) for image, mask in find_pairs(root / "images",
        ...                                                        root / "masks")]
        [('a.png', 'a_mask.png'), ('b.png', 'b_mask.png')]
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    images = _list_image_files(image_dir, "image")
    masks = _list_image_files(mask_dir, "mask")
    if mask_suffix is None:
        mask_suffix = _detect_suffix(set(images), masks, mask_dir)
    by_image_stem: dict[str, Path] = {}
    unpaired_masks = []
    for stem, path in masks.items():
        if mask_suffix and stem.endswith(mask_suffix):
            key = stem[: -len(mask_suffix)]
        elif mask_suffix:
            key = None
        else:
            key = stem
        if key is not None and key in images:
            by_image_stem[key] = path
        else:
            unpaired_masks.append(path.name)
    unpaired_images = [images[s].name for s in images if s not in by_image_stem]
    if unpaired_images or unpaired_masks:
        parts = []
        if unpaired_images:
            names = sorted(unpaired_images, key=_natural_key)
            parts.append(f"{len(names)} image(s) in {image_dir} have no mask in {mask_dir}: "
                         f"{_short_list(names)}")
        if unpaired_masks:
            names = sorted(unpaired_masks, key=_natural_key)
            parts.append(f"{len(names)} mask(s) in {mask_dir} have no image in {image_dir}: "
                         f"{_short_list(names)}")
        hint = (f" (mask names are matched as <image stem>{mask_suffix}.<ext>; "
                "set mask_suffix= if that is wrong)")
        raise DataError("; ".join(parts) + hint)
    return [(images[s], by_image_stem[s]) for s in sorted(images, key=_natural_key)]


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Layout:
    """A data-set folder layout.

    Attributes:
        root: the data-set root.
        kind: ``"folders"`` (root/images + root/masks, split ``"all"``),
            ``"split_folders"`` (root/<split>/images + masks) or ``"camvid"``
            (root/train + root/trainannot, ...).
        splits: split name -> (image folder, mask folder).
    """

    root: Path
    kind: str
    splits: dict[str, tuple[Path, Path]]


def _two_folders(d: Path) -> tuple[Path, Path] | None:
    for img, msk in TWO_FOLDER_NAMES:
        if (d / img).is_dir() and (d / msk).is_dir():
            return d / img, d / msk
    return None


def discover_layout(root: str | Path) -> Layout:
    """Recognise the folder layout of a data set.

    Supported: ``images/``+``masks/`` (also ``image/``+``label/``,
    ``images/``+``labels/``, ``image/``+``mask/``); the same pair inside
    ``train/ val/ test/``; CamVid ``train/ trainannot/ val/ valannot/ test/ testannot/``.

    Args:
        root: data-set root folder.

    Returns:
        The :class:`Layout`.

    Raises:
        DataError: root missing or no known layout (the message lists what was found).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a directory")
    pair = _two_folders(root)
    if pair:
        return Layout(root, "folders", {"all": pair})
    camvid = {s: (root / s, root / f"{s}annot") for s in CAMVID_SPLITS
              if (root / s).is_dir() and (root / f"{s}annot").is_dir()}
    if camvid:
        return Layout(root, "camvid", camvid)
    nested = {s: _two_folders(root / s) for s in CAMVID_SPLITS if (root / s).is_dir()}
    nested = {s: p for s, p in nested.items() if p}
    if nested:
        return Layout(root, "split_folders", nested)
    entries = sorted((p.name + ("/" if p.is_dir() else "") for p in root.iterdir()
                      if not p.name.startswith(".")), key=_natural_key)
    found = _short_list(entries, 20) if entries else "nothing (empty folder)"
    raise DataError(f"no known data layout under {root}; found: {found}. Expected "
                    "images/+masks/ (or image/+label/, images/+labels/), "
                    "train/+trainannot/ (CamVid), or train/images/+train/masks/; "
                    "or pass the image and mask folders explicitly")


def load_split(root: str | Path, split: str = "all",
               mask_suffix: str | None = None) -> list[Pair]:
    """Pairs of one split of a data set whose layout :func:`discover_layout` recognises.

    Args:
        root: data-set root.
        split: ``"train"``, ``"val"``, ``"test"``; ``"all"`` for a two-folder
            layout (which has no splits) or every split of a split layout.
        mask_suffix: passed to :func:`find_pairs`.

    Returns:
        (image_path, mask_path) pairs.

    Raises:
        DataError: unknown split (available ones listed) or any pairing error.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())           # a two-folder layout: image/ + label/
        >>> for folder in ("image", "label"):
        ...     (root / folder).mkdir()
        ...     (root / folder / "0.png").touch()
        >>> [(image.parent.name, mask.parent.name) for image, mask in load_split(root)]
        [('image', 'label')]
    """
    layout = discover_layout(root)
    if split == "all" and layout.kind != "folders":
        return [p for s in layout.splits.values() for p in find_pairs(*s, mask_suffix)]
    if split not in layout.splits:
        if layout.kind == "folders" and split in ("train", "val", "test"):
            # A flat two-folder data set has no splits; train on it, validate with a
            # split made by the caller.
            return find_pairs(*layout.splits["all"], mask_suffix)
        raise DataError(f"split {split!r} not found under {layout.root} ({layout.kind} "
                        f"layout); available: {', '.join(layout.splits)}")
    return find_pairs(*layout.splits[split], mask_suffix)


def _list_entry(text: str, base: Path, list_file: Path, line: int) -> Path:
    """One path of a pairs list, resolved under `base`; anything that could leave it is refused."""
    where = f"{list_file}, line {line}"
    entry = PurePath(text)
    if entry.is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
        raise DataError(f"{where}: absolute path {text!r} refused; list paths relative to "
                        f"{base}")
    if ".." in entry.parts or ".." in PureWindowsPath(text).parts:
        raise DataError(f"{where}: path {text!r} contains '..'; list paths must stay inside "
                        f"{base}")
    path = base / entry
    # A symlink inside the folder could still point outside it.
    if not path.resolve().is_relative_to(base.resolve()):
        raise DataError(f"{where}: {text!r} resolves to {path.resolve()}, outside {base}")
    if not path.is_file():
        raise DataError(f"{where}: file not found: {path}")
    return path


def read_pairs_list(list_file: str | Path, root: str | Path | None = None) -> list[Pair]:
    """Pairs from a list file: one ``image mask`` pair of relative paths per line.

    Fields are separated by whitespace or a comma; blank lines and lines starting with ``#``
    are skipped. Paths are relative to `root` (default: the list file's folder). Absolute paths,
    ``..`` components and symlinks that resolve outside `root` are refused, so a list can never
    make vggunet read from, or name an output after, a file outside its data folder.

    Args:
        list_file: the text file.
        root: folder the listed paths are relative to.

    Returns:
        (image_path, mask_path) pairs in list order.

    Raises:
        DataError: missing list file, a malformed line, a refused or missing path, a duplicate
            image, or an empty list (the file and line are named).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "a_mask.png"):
        ...     (root / name).touch()
        >>> _ = (root / "train.txt").write_text("a.png a_mask.png\\n")
        >>> [(i.name, m.name) for i, m in read_pairs_list(root / "train.txt")]
        [('a.png', 'a_mask.png')]
        >>> _ = (root / "bad.txt").write_text("../a.png a_mask.png\\n")
        >>> read_pairs_list(root / "bad.txt")
        Traceback (most recent call last):
        ...
        vggunet.errors.DataError: ...bad.txt, line 1: path '../a.png' contains '..'; list paths must stay inside ...
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DataError(f"pairs list not found: {list_file}")
    base = Path(root) if root is not None else list_file.parent
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read pairs list {list_file}: {error}") from error
    pairs: list[Pair] = []
    seen: dict[Path, int] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f for f in re.split(r"[,\s]+", text) if f]
        if len(fields) != 2:
            raise DataError(f"{list_file}, line {number}: expected 'image mask', got {text!r}")
        image, mask = (_list_entry(f, base, list_file, number) for f in fields)
        if image in seen:
            raise DataError(f"{list_file}, line {number}: {fields[0]!r} already listed on line "
                            f"{seen[image]}")
        seen[image] = number
        pairs.append((image, mask))
    if not pairs:
        raise DataError(f"pairs list {list_file} lists no pairs")
    return pairs


# --------------------------------------------------------------------------- reading


def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file {path} does not exist")
    try:
        img = Image.open(path)
        # Force the full decode: Image.open only reads the header, so a truncated
        # or corrupt file would otherwise pass and fail later inside tf.data.
        img.load()
    except UnidentifiedImageError:
        raise DataError(f"{path} is not a readable image (PIL cannot identify it; "
                        "is it really an image?)") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path} declares more pixels than PIL allows ({exc}); if the image "
                        "is genuine, raise PIL.Image.MAX_IMAGE_PIXELS") from None
    # PIL's decoders report a damaged file with many exception types (struct.error from a
    # short header, EOFError, IndexError from a bad palette ...); all mean the same here.
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            struct.error, zlib.error, MemoryError) as exc:
        raise DataError(f"{path} is truncated or corrupt: {type(exc).__name__}: "
                        f"{exc}") from None
    return img


def _convert(img: Image.Image, mode: str, path: Path) -> Image.Image:
    """`img.convert(mode)`, with PIL's failures on malformed files reported as DataError."""
    try:
        return img.convert(mode)
    # A palette image whose PLTE chunk is missing trips an `assert` inside PIL's convert;
    # other malformed files give ValueError/OSError/IndexError.
    except (ValueError, OSError, IndexError, TypeError, KeyError, AssertionError) as exc:
        raise DataError(f"{path} (mode {img.mode!r}) cannot be converted to {mode}: "
                        f"{type(exc).__name__}: {exc}; the file is malformed") from None


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _image_array(img: Image.Image, path: Path, channels: int | None) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float32)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"image {path} is 32-bit integer with values outside 0..65535; "
                            "convert it to 8- or 16-bit")
        arr = (arr / 257.0)[..., None]  # 16-bit grey -> 8-bit range, documented
    elif mode == "F":
        raise DataError(f"image {path} is a 32-bit float image, which is not supported; "
                        "save it as 8- or 16-bit")
    elif mode in ("L", "1"):
        arr = np.asarray(img.convert("L"), dtype=np.float32)[..., None]
    elif mode == "LA":
        arr = np.asarray(img, dtype=np.float32)[..., :1]
    elif mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        arr = np.asarray(img, dtype=np.float32)[..., :3]
    else:  # P, PA, CMYK, YCbCr, LAB, HSV ...
        arr = np.asarray(_convert(img, "RGB", path), dtype=np.float32)
    if channels == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif channels == 1 and arr.shape[-1] == 3:
        arr = (arr @ _LUMA)[..., None]
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Read one image as the pipeline does.

    Args:
        path: image file.
        channels: 1 or 3.

    Returns:
        float32 (H, W, channels) in the raw range [0, 255].

    Raises:
        DataError: unreadable, truncated or unsupported file.
    """
    if channels not in (1, 3):
        raise ArgumentError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    return _image_array(_open(path), path, channels)


def _single_channel(img: Image.Image, path: Path, fmt: str) -> np.ndarray:
    mode = img.mode
    if mode in ("L", "P", "I", "1") or mode.startswith("I;16"):
        # P-mode PNGs hold palette indices, which are exactly the class indices.
        return np.asarray(img).astype(np.int32)
    if mode in ("LA", "PA"):
        return np.asarray(img)[..., 0].astype(np.int32)
    if mode in ("RGB", "RGBA", "RGBX"):
        arr = np.asarray(img)[..., :3]
        diff = (arr[..., 0] != arr[..., 1]) | (arr[..., 0] != arr[..., 2])
        if diff.any():
            y, x = np.unravel_index(int(np.argmax(diff)), diff.shape)
            raise DataError(f"mask {path} is {mode} with differing channels (colour "
                            f"{tuple(int(v) for v in arr[y, x])} at row {y}, col {x}), so "
                            f"it is not a {fmt} mask; use mask_format='palette' with "
                            "palette=..., or mask_format='channel' with mask_channel=...")
        return arr[..., 0].astype(np.int32)
    raise DataError(f"mask {path} has unsupported image mode {mode!r} for "
                    f"mask_format={fmt!r}")


def _normalise_palette(palette, path_hint: str = "") -> tuple[np.ndarray, np.ndarray]:
    if palette is None:
        raise ArgumentError("mask_format='palette' needs palette= (a dict {class: (r, g, b)} "
                         "or a list of (r, g, b) where the position is the class)")
    items = palette.items() if isinstance(palette, Mapping) else enumerate(palette)
    codes, classes = [], []
    for cls, colour in items:
        colour = tuple(int(c) for c in colour)
        if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            raise ArgumentError(f"palette colour for class {cls} must be (r, g, b) in 0..255, "
                             f"got {colour}")
        code = (colour[0] << 16) | (colour[1] << 8) | colour[2]
        if code in codes:
            other = classes[codes.index(code)]
            if other != int(cls):
                raise ArgumentError(f"palette colour {colour} is given for classes {other} "
                                 f"and {cls}")
            continue
        codes.append(code)
        classes.append(int(cls))
    order = np.argsort(codes)
    return np.asarray(codes, np.int64)[order], np.asarray(classes, np.int32)[order]


def _palette_lookup(rgb: np.ndarray, lut: tuple[np.ndarray, np.ndarray],
                    path: Path) -> np.ndarray:
    codes_sorted, classes = lut
    codes = ((rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8)
             | rgb[..., 2].astype(np.int64))
    pos = np.clip(np.searchsorted(codes_sorted, codes), 0, len(codes_sorted) - 1)
    found = codes_sorted[pos] == codes
    if not found.all():
        bad = ~found
        y, x = np.unravel_index(int(np.argmax(bad)), bad.shape)
        unknown = np.unique(codes[bad])
        colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:5].tolist()]
        raise DataError(f"mask {path}: colour {tuple(int(v) for v in rgb[y, x])} at row {y}, "
                        f"col {x} is not in the palette ({int(bad.sum())} pixels in "
                        f"{len(unknown)} unknown colour(s), e.g. {colours}); palette "
                        f"colours: {[((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in codes_sorted.tolist()][:20]}")
    return classes[pos]


def _mask_array(img: Image.Image, path: Path, mask_format: str, lut, mask_channel: int
                ) -> np.ndarray:
    if mask_format == "index":
        return _single_channel(img, path, "index")
    if mask_format == "binary":
        arr = _single_channel(img, path, "binary")
        if arr.size and arr.max() <= 1 and arr.min() >= 0:
            return arr
        # 8-bit 0/255 (or JPEG-noisy) masks threshold at mid-grey; 16-bit at mid-range.
        threshold = 128 if arr.max() <= 255 else 32768
        return (arr >= threshold).astype(np.int32)
    if mask_format == "palette":
        rgb = np.asarray(_convert(img, "RGB", path))
        return _palette_lookup(rgb, lut, path)
    if mask_format == "channel":
        arr = np.asarray(img if img.mode in ("RGB", "RGBA", "L", "I", "LA")
                         or img.mode.startswith("I;16") else _convert(img, "RGBA", path))
        if arr.ndim == 2:
            arr = arr[..., None]
        if not 0 <= mask_channel < arr.shape[-1]:
            raise DataError(f"mask {path} has {arr.shape[-1]} channel(s) (mode {img.mode}); "
                            f"mask_channel={mask_channel} is invalid, use 0.."
                            f"{arr.shape[-1] - 1}")
        return arr[..., mask_channel].astype(np.int32)
    raise ArgumentError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")


def _check_mask_values(mask: np.ndarray, path: Path, num_classes: int,
                       ignore_index: int | None) -> None:
    bad = (mask < 0) | (mask >= num_classes)
    if ignore_index is not None:
        bad &= mask != ignore_index
    if bad.any():
        values = np.unique(mask[bad])
        y, x = np.unravel_index(int(np.argmax(bad)), bad.shape)
        ign = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        hint = ""
        if num_classes == 2 and set(values.tolist()) <= {255}:
            hint = "; a 0/255 binary mask needs mask_format='binary'"
        raise DataError(f"mask {path} has value(s) {_short_list([str(v) for v in values])} "
                        f"outside the valid class range 0..{num_classes - 1}{ign} "
                        f"(first at row {y}, col {x}; {int(bad.sum())} pixels){hint}")


def _check_format_args(mask_format: str, palette, mask_channel: int):
    if mask_format not in MASK_FORMATS:
        raise ArgumentError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    if mask_format == "channel" and mask_channel < 0:
        raise ArgumentError(f"mask_channel must be >= 0, got {mask_channel}")
    return _normalise_palette(palette) if mask_format == "palette" else None


def load_mask(path: str | Path, mask_format: str = "index", *, num_classes: int | None = None,
              palette=None, mask_channel: int = 0, ignore_index: int | None = None
              ) -> np.ndarray:
    """Read one mask as class indices.

    Args:
        path: mask file.
        mask_format: ``"index"``, ``"binary"``, ``"palette"`` or ``"channel"``.
        num_classes: when given, values must be < num_classes (or ignore_index).
        palette: for ``"palette"``: dict {class: (r, g, b)} or list of (r, g, b).
        mask_channel: for ``"channel"``: channel holding the class (0 = red).
        ignore_index: label value that is allowed beyond num_classes.

    Returns:
        int32 (H, W) class indices.

    Raises:
        DataError: unreadable file, colour not in palette, value out of range...
    """
    lut = _check_format_args(mask_format, palette, mask_channel)
    path = Path(path)
    mask = _mask_array(_open(path), path, mask_format, lut, mask_channel)
    if num_classes is not None:
        _check_mask_values(mask, path, num_classes, ignore_index)
    return mask


# --------------------------------------------------------------------------- validation


@dataclass
class DatasetInfo:
    """What :func:`validate_pairs` learnt while streaming over a data set.

    Attributes:
        num_pairs: number of (image, mask) pairs.
        num_classes: number of classes.
        mask_format: the mask encoding used.
        image_sizes: (H, W) -> number of images of that size.
        size_examples: (H, W) -> one image of that size (for messages).
        image_channels: native channel count (1 or 3) -> number of images.
        class_pixel_counts: int64 (num_classes,) pixels per class.
        class_image_pixels: int64 (num_classes,) labelled pixels of the images
            in which each class occurs (the denominator of median-frequency weights).
        ignored_pixels: pixels equal to ignore_index.
    """

    num_pairs: int
    num_classes: int
    mask_format: str
    image_sizes: dict[tuple[int, int], int] = field(default_factory=dict)
    size_examples: dict[tuple[int, int], Path] = field(default_factory=dict)
    image_channels: dict[int, int] = field(default_factory=dict)
    class_pixel_counts: np.ndarray = None
    class_image_pixels: np.ndarray = None
    ignored_pixels: int = 0

    @property
    def labelled_pixels(self) -> int:
        """Pixels carrying a class (ignored pixels excluded)."""
        return int(self.class_pixel_counts.sum())

    @property
    def class_frequencies(self) -> np.ndarray:
        """Fraction of labelled pixels in each class."""
        return self.class_pixel_counts / max(self.labelled_pixels, 1)


def _accumulate(counts: np.ndarray, image_pixels: np.ndarray, mask: np.ndarray,
                num_classes: int, ignore_index: int | None) -> int:
    valid = (mask >= 0) & (mask < num_classes)
    c = np.bincount(mask[valid].ravel(), minlength=num_classes)[:num_classes]
    counts += c
    image_pixels[c > 0] += int(valid.sum())
    return int((mask == ignore_index).sum()) if ignore_index is not None else 0


def validate_pairs(pairs: Sequence[Pair], num_classes: int, mask_format: str = "index",
                   palette=None, mask_channel: int = 0, ignore_index: int | None = None
                   ) -> DatasetInfo:
    """Check every pair up front, one file at a time, and gather statistics.

    Each image and mask is fully decoded (truncation is caught), sizes are
    compared and mask values checked against ``num_classes``.

    Args:
        pairs: (image_path, mask_path) pairs.
        num_classes: number of classes.
        mask_format, palette, mask_channel, ignore_index: as in :func:`load_mask`.

    Returns:
        :class:`DatasetInfo` with counts, sizes and per-class pixel counts.

    Raises:
        DataError: the first problem found, naming the file.
    """
    if num_classes < 1:
        raise ArgumentError(f"num_classes must be >= 1, got {num_classes}")
    lut = _check_format_args(mask_format, palette, mask_channel)
    if not pairs:
        raise DataError("no (image, mask) pairs to validate: the data set is empty")
    info = DatasetInfo(len(pairs), num_classes, mask_format,
                       class_pixel_counts=np.zeros(num_classes, np.int64),
                       class_image_pixels=np.zeros(num_classes, np.int64))
    for image_path, mask_path in pairs:
        image_path, mask_path = Path(image_path), Path(mask_path)
        img = _open(image_path)
        arr = _image_array(img, image_path, None)
        mask = _mask_array(_open(mask_path), mask_path, mask_format, lut, mask_channel)
        if arr.shape[:2] != mask.shape:
            raise DataError(f"size mismatch: image {image_path} is {arr.shape[0]}x"
                            f"{arr.shape[1]} (HxW) but its mask {mask_path} is "
                            f"{mask.shape[0]}x{mask.shape[1]}")
        _check_mask_values(mask, mask_path, num_classes, ignore_index)
        size = (int(arr.shape[0]), int(arr.shape[1]))
        info.image_sizes[size] = info.image_sizes.get(size, 0) + 1
        info.size_examples.setdefault(size, image_path)
        info.image_channels[arr.shape[2]] = info.image_channels.get(arr.shape[2], 0) + 1
        info.ignored_pixels += _accumulate(info.class_pixel_counts, info.class_image_pixels,
                                           mask, num_classes, ignore_index)
    return info


# --------------------------------------------------------------------------- weights


def class_weights(info_or_pairs, num_classes: int, method: str = "median_frequency",
                  ignore_index: int | None = None, *, mask_format: str = "index",
                  palette=None, mask_channel: int = 0) -> np.ndarray:
    """Per-class loss weights from class pixel frequencies.

    ``median_frequency`` (Eigen & Fergus 2015, SegNet): ``w_c = median(f) / f_c``
    with ``f_c`` = pixels of class c / labelled pixels of the images containing c.
    ``inverse_frequency``: ``w_c = N / (K * n_c)`` (N labelled pixels, K classes
    present, n_c pixels of c), so a balanced data set gets weight 1. Classes that
    never occur get weight 0 and are left out of the median.

    Args:
        info_or_pairs: a :class:`DatasetInfo`, a list of (image, mask) path pairs,
            a mask array (H, W) / (N, H, W), or a list of mask arrays.
        num_classes: number of classes.
        method: ``"median_frequency"`` or ``"inverse_frequency"``.
        ignore_index: label excluded from the counts (when arrays or pairs are given).
        mask_format, palette, mask_channel: how to read masks when pairs are given.

    Returns:
        float32 (num_classes,) weights.
    """
    if method not in ("median_frequency", "inverse_frequency"):
        raise ArgumentError(f"method must be 'median_frequency' or 'inverse_frequency', "
                         f"got {method!r}")
    src = info_or_pairs
    if isinstance(src, DatasetInfo):
        counts, image_pixels = src.class_pixel_counts, src.class_image_pixels
    else:
        if isinstance(src, np.ndarray):
            masks = [src] if src.ndim == 2 else list(src)
        elif src and isinstance(src[0], np.ndarray):
            masks = list(src)
        else:
            info = validate_pairs(src, num_classes, mask_format, palette, mask_channel,
                                  ignore_index)
            return class_weights(info, num_classes, method)
        counts = np.zeros(num_classes, np.int64)
        image_pixels = np.zeros(num_classes, np.int64)
        for m in masks:
            m = np.asarray(m)
            if ignore_index is not None:
                m = np.where(m == ignore_index, -1, m)
            _accumulate(counts, image_pixels, m, num_classes, None)
    counts = np.asarray(counts, np.float64)[:num_classes]
    present = counts > 0
    weights = np.zeros(num_classes, np.float64)
    if not present.any():
        return weights.astype(np.float32)
    if method == "median_frequency":
        freq = counts[present] / np.asarray(image_pixels, np.float64)[:num_classes][present]
        weights[present] = np.median(freq) / freq
    else:
        weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def _label_components(fg: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a boolean image: (labels 1..n, 0 = background, n)."""
    if _ndimage is not None:
        labels, n = _ndimage.label(fg)
        return labels.astype(np.int32), int(n)
    h, w = fg.shape
    padded = np.zeros((h, w + 1), np.int8)
    padded[:, 1:] = fg
    starts = np.diff(padded, axis=1) == 1  # True where a horizontal run begins
    # Row-major cumulative count of run starts = run id of every foreground pixel.
    run_id = np.cumsum(starts.ravel()).reshape(h, w)
    n_runs = int(run_id[-1, -1]) if h and w else 0
    if n_runs == 0:
        return np.zeros((h, w), np.int32), 0
    both = fg[:-1] & fg[1:]
    edges = np.unique(np.stack([run_id[:-1][both], run_id[1:][both]], 1), axis=0)
    parent = list(range(n_runs + 1))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in edges.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n_runs + 1)])
    _, comp = np.unique(roots[1:], return_inverse=True)
    lut = np.concatenate([[0], comp.ravel() + 1]).astype(np.int32)
    labels = np.where(fg, lut[run_id], 0).astype(np.int32)
    return labels, int(comp.max() + 1)


def _distance_to(target: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance from every pixel to the nearest True pixel of ``target``."""
    if _ndimage is not None:
        return _ndimage.distance_transform_edt(~target)
    h, w = target.shape
    big = 1e9
    rows = np.arange(h, dtype=np.float64)[:, None]
    # Pass 1: distance along each column to the nearest target pixel above/below.
    above = np.maximum.accumulate(np.where(target, rows, -big), axis=0)
    below = np.minimum.accumulate(np.where(target, rows, big)[::-1], axis=0)[::-1]
    g2 = np.minimum(rows - above, below - rows) ** 2
    # Pass 2: exact min over columns, brute force in row chunks (O(H W^2)), which
    # is cheap for the object windows border_weight_map uses.
    cols = np.arange(w, dtype=np.float64)
    dx2 = (cols[:, None] - cols[None, :]) ** 2
    out = np.empty((h, w), np.float64)
    step = max(1, (4 << 20) // max(w * w, 1))
    for r in range(0, h, step):
        out[r:r + step] = (g2[r:r + step, None, :] + dx2[None]).min(axis=2)
    return np.sqrt(out)


def border_weight_map(mask: np.ndarray, w0: float = 10.0, sigma: float = 5.0,
                      class_weights: np.ndarray | None = None,
                      ignore_index: int | None = None) -> np.ndarray:
    """U-Net separation weights (Ronneberger et al. 2015, eq. 2).

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`` where d1, d2
    are the distances to the nearest and second-nearest object; objects are the
    4-connected components of the foreground (class != 0). The separation term
    is added on background pixels only: inside an object d1 = 0, and the paper's
    weight maps emphasise the gaps between touching objects, not their interiors.
    Objects farther than ``4.3 sigma`` are skipped, where the term is below
    ``1e-4 * w0``.

    Args:
        mask: int (H, W) class indices; 0 is background.
        w0: weight of the separation term.
        sigma: its width in pixels.
        class_weights: optional (num_classes,) weights for ``w_c``; default 1.
        ignore_index: pixels with this value get weight 0.

    Returns:
        float32 (H, W) weights.
    """
    mask = np.asarray(mask)
    valid = np.ones(mask.shape, bool) if ignore_index is None else mask != ignore_index
    if class_weights is None:
        wc = np.ones(mask.shape, np.float64)
    else:
        cw = np.asarray(class_weights, np.float64)
        wc = cw[np.clip(np.where(valid, mask, 0), 0, len(cw) - 1)]
    fg = valid & (mask > 0)
    labels, n = _label_components(fg)
    weights = wc
    if n >= 2 and w0 and sigma > 0:
        h, w = mask.shape
        reach = int(math.ceil(sigma * math.sqrt(2.0 * math.log(1e4))))
        d1 = np.full(mask.shape, np.inf)
        d2 = np.full(mask.shape, np.inf)
        ys, xs = np.nonzero(labels)
        lab = labels[ys, xs] - 1
        y0 = np.full(n, h); y1 = np.full(n, -1); x0 = np.full(n, w); x1 = np.full(n, -1)
        np.minimum.at(y0, lab, ys); np.maximum.at(y1, lab, ys)
        np.minimum.at(x0, lab, xs); np.maximum.at(x1, lab, xs)
        for k in range(n):
            win = (slice(max(y0[k] - reach, 0), min(y1[k] + reach + 1, h)),
                   slice(max(x0[k] - reach, 0), min(x1[k] + reach + 1, w)))
            d = _distance_to(labels[win] == k + 1)
            a, b = d1[win], d2[win]
            d2[win] = np.minimum(np.maximum(a, d), b)
            d1[win] = np.minimum(a, d)
        with np.errstate(invalid="ignore", over="ignore"):
            sep = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma ** 2))
        sep = np.where(np.isfinite(d2) & valid & (mask == 0), sep, 0.0)
        weights = wc + sep
    return np.where(valid, weights, 0.0).astype(np.float32)


# --------------------------------------------------------------------------- tf.data


def _as_hw(value, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ArgumentError(f"{name} must be (H, W) with positive ints, got {value}")
    return value


def make_dataset(image_dir: str | Path | None = None, mask_dir: str | Path | None = None, *,
                 pairs: Sequence[Pair] | None = None, num_classes: int,
                 mask_format: str = "index", palette=None, mask_channel: int = 0,
                 ignore_index: int | None = None, mask_suffix: str | None = None,
                 channels: int = 3, scale: str = "raw",
                 size: tuple[int, int] | None = None, crop: tuple[int, int] | None = None,
                 flip: bool = False, pad_to: int | None = None,
                 augment: Augment | str | None = None, batch_size: int = 8,
                 shuffle: bool = True, seed: int | None = None, repeat: bool = False,
                 cache: bool = False, validate: bool = True,
                 sample_weights: str | None = None, border_w0: float = 10.0,
                 border_sigma: float = 5.0):
    """Build a ``tf.data`` pipeline of (images, masks[, weights]) batches.

    Per element: decode (PIL) -> resize ``size`` -> random ``crop`` -> ``flip``
    -> ``augment`` -> ``pad_to`` -> channels/scale. All random ops are
    stateless, seeded from (a per-epoch key drawn from ``seed``, element index),
    so two datasets built with the same arguments and seed yield identical
    batches, while successive epochs still differ.

    Args:
        image_dir, mask_dir: folders paired with :func:`find_pairs` (or give ``pairs``).
        pairs: explicit (image_path, mask_path) list.
        num_classes: number of classes.
        mask_format, palette, mask_channel, ignore_index: see :func:`load_mask`.
        mask_suffix: see :func:`find_pairs`.
        channels: 1 or 3 output channels.
        scale: ``"raw"`` ([0, 255]) or ``"unit"`` ([0, 1]).
        size: (H, W) resize (bilinear image, nearest mask).
        crop: (H, W) random crop, identical for image and mask; smaller inputs
            are reflect-padded.
        flip: random horizontal and vertical flips.
        pad_to: pad H and W (bottom/right) up to a multiple of this; image by
            reflection, mask with ignore_index (or 0), weights with 0.
        augment: an :class:`~vggunet.augment.Augment` or its string spec.
        batch_size: batch size (last batch may be smaller).
        shuffle: shuffle the files each epoch.
        seed: makes the pipeline deterministic.
        repeat: repeat forever.
        cache: keep decoded (and resized) samples in memory after the first epoch.
        validate: run :func:`validate_pairs` first (recommended).
        sample_weights: None, ``"median_frequency"``, ``"inverse_frequency"``
            (per-pixel class weights) or ``"border"`` (U-Net separation weights
            with median-frequency ``w_c``); adds float32 (B, H, W) weights.
        border_w0, border_sigma: parameters of the border weights.

    Returns:
        ``tf.data.Dataset`` of (float32 (B, H, W, C), int32 (B, H, W)) or
        (images, masks, float32 weights (B, H, W)).

    Raises:
        DataError: pairing or validation problem (names the file).
        ValueError: invalid argument.
    """
    import tensorflow as tf  # deferred: data inspection must not pay TF import cost

    if channels not in (1, 3):
        raise ArgumentError(f"channels must be 1 or 3, got {channels}")
    if scale not in ("raw", "unit"):
        raise ArgumentError(f"scale must be 'raw' or 'unit', got {scale!r}")
    if sample_weights not in (None, "median_frequency", "inverse_frequency", "border"):
        raise ArgumentError("sample_weights must be None, 'median_frequency', "
                         f"'inverse_frequency' or 'border', got {sample_weights!r}")
    if batch_size < 1:
        raise ArgumentError(f"batch_size must be >= 1, got {batch_size}")
    if pad_to is not None and int(pad_to) < 1:
        raise ArgumentError(f"pad_to must be a positive int, got {pad_to}")
    size, crop = _as_hw(size, "size"), _as_hw(crop, "crop")
    if isinstance(augment, str):
        augment = Augment.parse(augment)
    if augment is not None and not augment.enabled:
        augment = None
    lut = _check_format_args(mask_format, palette, mask_channel)

    if pairs is None:
        if image_dir is None or mask_dir is None:
            raise ArgumentError("give image_dir and mask_dir, or pairs=")
        pairs = find_pairs(image_dir, mask_dir, mask_suffix)
    pairs = [(Path(a), Path(b)) for a, b in pairs]
    if not pairs:
        raise DataError("no (image, mask) pairs: the data set is empty")

    info = None
    if validate or sample_weights in ("median_frequency", "inverse_frequency", "border"):
        info = validate_pairs(pairs, num_classes, mask_format, palette, mask_channel,
                              ignore_index)
        if len(info.image_sizes) > 1 and size is None and crop is None and batch_size > 1:
            (s1, p1), (s2, p2) = list(info.size_examples.items())[:2]
            raise DataError(f"images have different sizes ({p1} is {s1[0]}x{s1[1]}, {p2} is "
                            f"{s2[0]}x{s2[1]}, {len(info.image_sizes)} sizes in all) and "
                            "cannot be batched; pass size= or crop=, or batch_size=1")
    cw = None
    if sample_weights is not None:
        method = "inverse_frequency" if sample_weights == "inverse_frequency" \
            else "median_frequency"
        cw = class_weights(info, num_classes, method)

    native = 1 if channels == 1 else None  # grey stays 1 channel until the end: cheaper

    def decode(i):
        image_path, mask_path = pairs[int(i)]
        arr = _image_array(_open(image_path), image_path, native)
        mask = _mask_array(_open(mask_path), mask_path, mask_format, lut, mask_channel)
        if arr.shape[:2] != mask.shape:
            raise DataError(f"size mismatch: image {image_path} is {arr.shape[0]}x"
                            f"{arr.shape[1]} but its mask {mask_path} is "
                            f"{mask.shape[0]}x{mask.shape[1]}")
        return arr, mask

    def tf_decode(i):
        image, mask = tf.numpy_function(decode, [i], [tf.float32, tf.int32], stateful=False)
        image.set_shape([None, None, None])
        mask.set_shape([None, None])
        if size is not None:
            image = tf.image.resize(image, size, "bilinear")
            mask = tf.image.resize(mask[..., None], size, "nearest")[..., 0]
        return image, mask, i

    fill = 0 if ignore_index is None else int(ignore_index)
    n = len(pairs)

    def transform(image, mask, index, key):
        s = tf.random.experimental.stateless_split(tf.stack([key, index]), 3)
        if crop is not None:
            image, mask = _random_crop(tf, image, mask, crop, s[0])
        if flip:
            image, mask = random_flip(image, mask, s[1])
        if augment is not None:
            image, mask = augment.apply(image, mask, s[2])
        weights = None
        if sample_weights == "border":
            weights = tf.numpy_function(
                lambda m: border_weight_map(m, border_w0, border_sigma, cw, ignore_index),
                [mask], tf.float32, stateful=False)
            weights.set_shape([None, None])
        elif cw is not None:
            valid = (mask >= 0) & (mask < num_classes)
            weights = tf.where(valid, tf.gather(tf.constant(cw), tf.clip_by_value(
                mask, 0, num_classes - 1)), 0.0)
        if pad_to is not None:
            image, mask, weights = _pad_to_multiple(tf, image, mask, weights, int(pad_to),
                                                    fill)
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        image = tf.broadcast_to(image, [h, w, channels])
        if scale == "unit":
            image = image / 255.0
        out_hw = _static_hw(size, crop, pad_to)
        image.set_shape([*out_hw, channels])
        mask.set_shape(out_hw)
        if weights is None:
            return image, mask
        weights.set_shape(out_hw)
        return image, mask, weights

    autotune = tf.data.AUTOTUNE
    indices = tf.data.Dataset.range(n)
    # One random key per element per epoch: `rerandomize_each_iteration` gives a new
    # deterministic stream for every pass over the data (and every repeat).
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    shuffle_seed = seed
    if cache:
        ds = indices.map(tf_decode, num_parallel_calls=autotune, deterministic=True).cache()
        ds = tf.data.Dataset.zip(ds, keys).map(lambda e, k: (*e, k))
        if shuffle:
            ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
    else:
        ds = tf.data.Dataset.zip(indices, keys)
        if shuffle:
            # Shuffle file indices, not decoded images: the buffer stays tiny.
            ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.map(lambda i, k: (*tf_decode(i), k), num_parallel_calls=autotune,
                    deterministic=True)
    ds = ds.map(transform, num_parallel_calls=autotune, deterministic=True)
    ds = ds.batch(batch_size, num_parallel_calls=autotune, deterministic=True)
    return ds.prefetch(autotune)


def _static_hw(size, crop, pad_to) -> list:
    hw = crop or size
    if hw is None:
        return [None, None]
    if pad_to:
        hw = tuple(int(math.ceil(v / pad_to) * pad_to) for v in hw)
    return list(hw)


def _random_crop(tf, image, mask, crop, seed):
    """Random (H, W) window; smaller inputs are placed randomly and reflect-padded."""
    shape = tf.shape(image)
    ch, cw = crop
    u = tf.random.stateless_uniform([2], seed=seed)

    def axis_index(n, c, r):
        slack = tf.abs(n - c)
        start = tf.cast(tf.floor(r * tf.cast(slack + 1, tf.float32)), tf.int32)
        start = tf.minimum(start, slack)
        start = tf.where(n >= c, start, -start)
        return reflect_index(start + tf.range(c), n)

    rows = axis_index(shape[0], ch, u[0])
    cols = axis_index(shape[1], cw, u[1])
    image = tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)
    mask = tf.gather(tf.gather(mask, rows, axis=0), cols, axis=1)
    return image, mask


def _pad_to_multiple(tf, image, mask, weights, k: int, fill: int):
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    th = (h + k - 1) // k * k
    tw = (w + k - 1) // k * k
    rows = reflect_index(tf.range(th), h)
    cols = reflect_index(tf.range(tw), w)
    image = tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)
    mask = tf.pad(mask, [[0, th - h], [0, tw - w]], constant_values=fill)
    if weights is not None:
        weights = tf.pad(weights, [[0, th - h], [0, tw - w]])
    return image, mask, weights
