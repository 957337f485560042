"""Finding a data set's (image, mask) pairs: folder pairing by stem, layouts, split and list files.

Nothing here decodes an image: pairing looks at names only (natural order, ``img10`` after
``img9``), so it is fast on large folders and needs neither PIL nor TensorFlow. Every problem is a
:class:`~vggunet.errors.DataError` naming the folder or file and what was expected.

Example:
    >>> sorted(["img10.png", "img9.png", "img1.png"], key=_natural_key)
    ['img1.png', 'img9.png', 'img10.png']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PureWindowsPath

from vggunet.checks import did_you_mean
from vggunet.data.images import IMAGE_EXTENSIONS
from vggunet.errors import DataError

__all__ = [
    "CAMVID_SPLITS",
    "Layout",
    "MASK_SUFFIXES",
    "Pair",
    "TWO_FOLDER_NAMES",
    "discover_layout",
    "find_pairs",
    "load_split",
    "read_pairs_list",
]

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
                        "pass mask_suffix= explicitly (CLI: list the pairs in a --pairs file)")
    return winners[0]


def find_pairs(image_dir: str | Path, mask_dir: str | Path,
               mask_suffix: str | None = None) -> list[Pair]:
    """Pair images and masks by file stem.

    Extensions png/jpg/jpeg/bmp/tif/tiff/npy are recognised case-insensitively;
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
                "set mask_suffix= if that is wrong, or on the CLI list the pairs in a --pairs "
                "file)")
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
        if layout.kind == "folders" and split in CAMVID_SPLITS:
            # A flat two-folder data set has no splits; train on it, validate with a
            # split made by the caller.
            return find_pairs(*layout.splits["all"], mask_suffix)
        raise DataError(f"split {split!r} not found under {layout.root} ({layout.kind} "
                        f"layout); available: {', '.join(layout.splits)}."
                        f"{did_you_mean(split, list(layout.splits))}")
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
        vggunet.errors.DataError: ...bad.txt, line 1: path '../a.png' contains '..'; list paths
        must stay inside ...
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

