"""Volume readers, layouts and validation on the shared BraTS patches and hippocampus NIfTI
files."""

from __future__ import annotations

import gzip
from pathlib import Path

import h5py
import nibabel
import numpy as np
import pytest

from vggunet.data.volume_cases import (BRATS_MODALITIES, VolumeCase, find_volume_cases,
                                       load_case, validate_volume_cases)
from vggunet.data.volume_io import read_h5_patch, read_volume, volume_stem
from vggunet.errors import ArgumentError, DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BRATS = DATA / "brats3d" / "train"
HIPPO = DATA / "hippocampus"
PATCH = BRATS / "BRATS_009_patch10_x78_y33_z93.h5"


@pytest.fixture(scope="module")
def brats_patch() -> tuple[np.ndarray, np.ndarray]:
    """The raw `x` (4, 160, 160, 16) and `y` (160, 160, 16, 4) of one shared patch."""
    if not PATCH.is_file():
        pytest.skip(f"BraTS patches not found at {BRATS}")
    with h5py.File(PATCH, "r") as file:
        return file["x"][()], file["y"][()]


def _save_nifti(path: Path, array: np.ndarray) -> Path:
    nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), path)
    return path


def test_h5_reader_moves_channels_and_argmaxes(brats_patch):
    x, y = brats_patch
    image, label = read_h5_patch(PATCH)
    assert image.shape == (160, 160, 16, 4) and image.dtype == np.float32
    assert label.shape == (160, 160, 16) and label.dtype == np.int32
    np.testing.assert_allclose(image[..., 2], x[2].astype(np.float32))
    # One-hot: the class of a voxel is where its y row is 1.
    for cls in range(4):
        np.testing.assert_array_equal(label == cls, y[..., cls] == 1)
    assert set(np.unique(label)) == {0, 1, 2, 3}
    cases = find_volume_cases(BRATS)
    assert len(cases) == 20 and cases[0].name == "BRATS_009_patch1_x73_y11_z63"
    assert cases[0].images == (cases[0].label,) and cases[0].label.suffix == ".h5"
    assert find_volume_cases(images=BRATS, layout="h5") == cases


def test_h5_keys_configurable_and_missing_key_named(tmp_path, brats_patch):
    x, y = brats_patch
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as file:
        file["image"] = x[:, :8, :8, :4]
        file["seg"] = np.argmax(y[:8, :8, :4], -1)
    image, label = load_case(VolumeCase("p", (path,), path), h5_keys=("image", "seg"))
    assert image.shape == (8, 8, 4, 4)
    np.testing.assert_array_equal(label, np.argmax(y[:8, :8, :4], -1))
    with pytest.raises(DataError, match=r"p\.h5 has no dataset 'x'.*image, seg"):
        load_case(VolumeCase("p", (path,), path))


def test_decathlon_nifti_volumes():
    if not (HIPPO / "imagesTr").is_dir():
        pytest.skip("hippocampus data not found")
    cases = find_volume_cases(HIPPO)
    assert len(cases) == 200 and cases[0].name == "hippocampus_001"
    assert [c.name for c in cases[:3]] == ["hippocampus_001", "hippocampus_003", "hippocampus_004"]
    for case in cases[:2]:
        image, label = load_case(case)
        raw = np.asarray(nibabel.load(case.images[0]).dataobj)
        np.testing.assert_array_equal(image[..., 0], raw.astype(np.float32))
        assert image.shape == raw.shape + (1,) and label.shape == raw.shape
        assert label.dtype == np.int32 and set(np.unique(label)) <= {0, 1, 2}
    info = validate_volume_cases(cases[:3], 3)
    counts = sum(np.bincount(load_case(c)[1].ravel(), minlength=3) for c in cases[:3])
    np.testing.assert_array_equal(info.class_voxel_counts, counts)
    assert info.num_cases == 3 and info.channels == 1 and sum(info.shapes.values()) == 3


def test_brats_layout_stacks_modalities_in_configured_order(tmp_path, brats_patch):
    x, y = brats_patch
    x, y = x[:, :16, :16, :4], np.argmax(y[:16, :16, :4], -1).astype(np.uint8)
    for case in ("BraTS_001", "BraTS_002"):
        folder = tmp_path / case
        folder.mkdir()
        for channel, modality in enumerate(BRATS_MODALITIES):
            _save_nifti(folder / f"{case}_{modality}.nii.gz", x[channel].astype(np.float32))
        _save_nifti(folder / f"{case}_seg.nii.gz", y)
    cases = find_volume_cases(tmp_path)
    assert [c.name for c in cases] == ["BraTS_001", "BraTS_002"]
    image, label = load_case(cases[0])
    np.testing.assert_allclose(image, np.moveaxis(x, 0, -1).astype(np.float32))
    np.testing.assert_array_equal(label, y)
    order = ("t2", "flair", "t1ce", "t1")
    image, _ = load_case(find_volume_cases(tmp_path, layout="brats", modalities=order)[1])
    for channel, modality in enumerate(order):
        np.testing.assert_allclose(image[..., channel], x[BRATS_MODALITIES.index(modality)])
    (tmp_path / "BraTS_001" / "BraTS_001_seg.nii.gz").unlink()
    with pytest.raises(DataError, match=r"1 case folder\(s\) in .* have no CASE_seg label "
                                        r"file: BraTS_001"):
        find_volume_cases(tmp_path)
    (tmp_path / "BraTS_002" / "BraTS_002_t1ce.nii.gz").unlink()
    with pytest.raises(DataError, match=r"BraTS_002 has no file for modality 't1ce'"):
        find_volume_cases(tmp_path)


def test_folders_layout_with_npy_and_nifti(tmp_path, rng):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    image = rng.normal(size=(6, 5, 4, 2)).astype(np.float32)
    label = rng.integers(0, 3, size=(6, 5, 4))
    np.save(tmp_path / "images" / "b.npy", image)
    np.save(tmp_path / "labels" / "b.npy", label)
    _save_nifti(tmp_path / "images" / "a.nii", image[..., 0])
    _save_nifti(tmp_path / "labels" / "a_seg.nii.gz", label.astype(np.int16))
    cases = find_volume_cases(tmp_path)
    assert [(c.name, c.label.name) for c in cases] == [("a", "a_seg.nii.gz"), ("b", "b.npy")]
    loaded = [load_case(c) for c in cases]
    np.testing.assert_array_equal(loaded[0][0], image[..., :1])
    np.testing.assert_array_equal(loaded[1][0], image)
    for _, got in loaded:
        np.testing.assert_array_equal(got, label)
    same = find_volume_cases(images=tmp_path / "images", labels=tmp_path / "labels")
    assert same == cases
    assert volume_stem("x.nii.gz") == "x" and read_volume(cases[1].images[0]).shape == (6, 5, 4, 2)


def test_unpaired_files_listed(tmp_path):
    for folder, name in [("imagesTr", "a"), ("imagesTr", "b"), ("labelsTr", "a"),
                         ("labelsTr", "c")]:
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / f"{name}.nii.gz").touch()
    with pytest.raises(DataError, match=r"1 image\(s\) in .*imagesTr have no label.*: b\.nii\.gz;"
                                        r" 1 label\(s\) in .*labelsTr have no image.*: c\.nii\.gz"):
        find_volume_cases(tmp_path, layout="decathlon")
    with pytest.raises(ArgumentError, match="layout must be one of"):
        find_volume_cases(tmp_path, layout="nnunet")
    with pytest.raises(ArgumentError, match="layout 'brats' needs a root folder"):
        find_volume_cases(images=tmp_path / "imagesTr", layout="brats")
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match=r"no known volume layout under .*other"):
        find_volume_cases(tmp_path / "other")


def _case(tmp_path: Path, name: str, image: np.ndarray, label: np.ndarray) -> VolumeCase:
    return VolumeCase(name, (_save_nifti(tmp_path / f"{name}.nii.gz", image),),
                      _save_nifti(tmp_path / f"{name}_seg.nii.gz", label))


def test_validation_errors_name_the_file(tmp_path):
    good = _case(tmp_path, "good", np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint8))
    label = np.zeros((4, 4, 3), np.uint8)
    label[1, 2, 0] = 5
    out_of_range = _case(tmp_path, "range", np.zeros((4, 4, 3), np.float32), label)
    with pytest.raises(DataError, match=r"range_seg\.nii\.gz holds values \[5\] outside \[0, 3\)"):
        validate_volume_cases([good, out_of_range], 3)
    mismatch = _case(tmp_path, "shape", np.zeros((4, 4, 3), np.float32),
                     np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(DataError, match=r"shape_seg\.nii\.gz has shape \(4, 5, 3\), but its image"):
        validate_volume_cases([mismatch], 3)
    two = _case(tmp_path, "two", np.zeros((4, 4, 3, 2), np.float32), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"two\.nii\.gz has 2 channel\(s\); expected 1"):
        validate_volume_cases([good, two], 3)
    with pytest.raises(DataError, match=r"good\.nii\.gz has 1 channel\(s\); expected 4"):
        validate_volume_cases([good], 3, channels=4)
    _save_nifti(tmp_path / "wide.nii.gz", np.zeros((5, 4, 3), np.float32))
    modality = VolumeCase("mod", (good.images[0], tmp_path / "wide.nii.gz"), good.label)
    with pytest.raises(DataError, match=r"wide\.nii\.gz has spatial shape \(5, 4, 3\), but "
                                        r".*good\.nii\.gz has \(4, 4, 3\)"):
        validate_volume_cases([modality], 3)


def test_corrupt_files_named(tmp_path):
    good = _case(tmp_path, "good", np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint8))
    data = good.images[0].read_bytes()
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(data[: len(data) // 2])
    not_gzip = tmp_path / "junk.nii.gz"
    not_gzip.write_bytes(b"not a volume at all")
    plain = tmp_path / "short.nii"
    plain.write_bytes(gzip.decompress(data)[:200])
    for bad in (truncated, not_gzip, plain):
        with pytest.raises(DataError, match=rf"{bad.name} is not a readable NIfTI file"):
            validate_volume_cases([VolumeCase("bad", (bad,), good.label)], 3)
    bad_h5 = tmp_path / "bad.h5"
    bad_h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(DataError, match=r"bad\.h5 is not a readable HDF5 file"):
        load_case(VolumeCase("bad", (bad_h5,), bad_h5))
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy is an object \(pickled\) array"):
        load_case(VolumeCase("obj", (pickled,), None))
    fractional = _case(tmp_path, "frac", np.zeros((2, 2, 2), np.float32),
                       np.full((2, 2, 2), 0.5, np.float32))
    with pytest.raises(DataError, match=r"frac_seg\.nii\.gz holds values that are not whole"):
        load_case(fractional)
