"""The `vggunet` command on volumes, run in this process (test_cli runs the entry point as
a subprocess): train → resume → predict → evaluate → export on three of the shared BraTS patches
(tiny 3D U-Net, 32×32×16 patches), an index-label run on Decathlon hippocampus NIfTI files,
`inspect` of the lab's presets, and one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel
import numpy as np
import pytest
from PIL import Image

from tests.test_cli import assert_ok, run_main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BRATS = SHARED / "brats3d" / "train"
HIPPOCAMPUS = SHARED / "hippocampus"
TINY_3D = ["--model-type", "unet3d", "--depth", "2", "--base-filters", "4",
           "--patch", "32x32x16", "--channels", "4", "--num-classes", "4", "--precision",
           "float32"]

pytestmark = pytest.mark.slow


def _brats_run(root: Path, capsys):
    """Three shared patches; a 2-epoch run holding one of them out."""
    data = root / "h5"
    data.mkdir()
    for path in sorted(BRATS.glob("*.h5"))[:3]:
        shutil.copy(path, data / path.name)
    out = root / "run"
    proc = run_main(capsys, "train", *TINY_3D, "--data", str(data), "--val-split", "0.34",
                    "--seed", "0", "--epochs", "1", "--batch-size", "2", "--out", str(out),
                    "--quiet")
    assert_ok(proc)
    return root, data, out, proc


def _log_rows(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_volume_workflow_train_resume_predict_evaluate(tmp_path, capsys):
    """One chain (so the training runs once, whichever worker runs it), all in this process:
    each subprocess would pay a TensorFlow start-up."""
    root, data, out, proc = _brats_run(tmp_path, capsys)
    assert "data: 2 training volumes, 1 validation volumes" in proc.stdout
    assert "best val_dice_coefficient" in proc.stdout
    rows = _log_rows(out)
    assert [r["epoch"] for r in rows] == ["0"]
    assert {"val_dice_coefficient", "per_class_dice_0", "per_class_dice_2"} <= set(rows[0])
    state = json.loads((out / "state.json").read_text())
    data_settings = state["settings"]["data"]
    assert data_settings["patch"] == [32, 32, 16] and data_settings["standardize"] == "lab"
    assert state["settings"]["compile"]["loss"] == "soft_dice"
    code, _, err = _main(capsys, "train", *TINY_3D, "--data", str(data), "--val-split", "0.34",
                         "--seed", "0", "--epochs", "2", "--batch-size", "2", "--out", str(out),
                         "--quiet", "--resume")
    assert code == 0, err
    assert [r["epoch"] for r in _log_rows(out)] == ["0", "1"]
    _predict_and_evaluate(root, data, out, capsys)


def _predict_and_evaluate(root: Path, data: Path, out: Path, capsys) -> None:
    model = out / "checkpoints" / "last.keras"
    one = sorted(data.glob("*.h5"))[0]
    pred = root / "pred"
    proc = run_main(capsys, "predict", "--model", str(model), "--input", str(one), "--out",
                    str(pred), "--slices", "--quiet")
    assert_ok(proc)
    name = one.name[: -len(".h5")]
    labels = nibabel.load(pred / f"{name}.nii.gz")
    assert labels.shape == (160, 160, 16)
    assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1, 2, 3}
    assert Image.open(pred / f"{name}_slices.png").size[0] > 200
    report = root / "scores.json"
    slices = root / "slices.png"
    proc = run_main(capsys, "evaluate", "--model", str(model), "--data", str(data), "--out",
                    str(report), "--slices", str(slices), "--quiet")
    assert_ok(proc)
    scores = json.loads(report.read_text())
    assert "dice" in json.dumps(scores).lower() and "specificity" in json.dumps(scores).lower()
    assert "sensitivity" in proc.stdout.lower()
    assert slices.stat().st_size > 1000


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    """`run_main`'s exit code, stdout and stderr."""
    proc = run_main(capsys, *argv)
    return proc.returncode, proc.stdout, proc.stderr


def test_export_a_volume_model(tmp_path, capsys):
    from vggunet.models.unet3d import build_unet_3d

    root = tmp_path
    model = root / "unet3d.keras"
    build_unet_3d((16, 16, 8, 2), depth=2, base_filters=2, data_format="channels_last").save(
        model)
    code, _, err = _main(capsys, "export", "--model", str(model), "--out",
                         str(root / "serving"), "--format", "savedmodel")
    assert code == 0, err
    assert (root / "serving" / "saved_model.pb").is_file()
    code, _, err = _main(capsys, "export", "--model", str(model), "--out", str(root / "m.tflite"))
    assert code == 2 and "tflite cannot run volume models" in err


def test_decathlon_index_labels_channels_last(tmp_path, capsys):
    """Hippocampus NIfTI files, softmax over 3 classes: train one epoch, evaluate."""
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / "data" / sub).mkdir(parents=True)
        for path in sorted((HIPPOCAMPUS / sub).glob("*.nii.gz"))[:3]:
            shutil.copy(path, tmp_path / "data" / sub / path.name)
    out = tmp_path / "run"
    code, stdout, err = _main(
        capsys, "train", "--model-type", "unet3d", "--depth", "2", "--base-filters", "4",
        "--patch", "32x32x32", "--channels", "1", "--num-classes", "3", "--label-mode", "index",
        "--data-format", "channels_last", "--standardize", "zscore", "--data",
        str(tmp_path / "data"), "--epochs", "1", "--batch-size", "2", "--seed", "1", "--out",
        str(out), "--quiet", "--no-tensorboard")
    assert code == 0, err
    assert "data: 3 training volumes" in stdout
    assert "mean_iou" in _log_rows(out)[0]
    report = tmp_path / "scores.json"
    # No --standardize: the training run's zscore, read from its state.json.
    code, stdout, err = _main(capsys, "evaluate", "--model",
                              str(out / "checkpoints" / "last.keras"), "--data",
                              str(tmp_path / "data"), "--out", str(report))
    assert code == 0, err
    assert f"standardize: zscore (the training run's, from {out / 'state.json'})" in stdout
    scores = json.loads(report.read_text())
    assert scores["label_mode"] == "index" and len(scores["cases"]) == 3
    assert "dice" in stdout.lower()


def test_training_standardize_reads_the_run_state(tmp_path):
    from vggunet.cli.volume_commands import training_standardize

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    model = run / "checkpoints" / "best.keras"
    assert training_standardize(model) is None  # no state.json
    (run / "state.json").write_text(json.dumps({"settings": {"data": None}}))  # not recorded
    assert training_standardize(model) is None
    (run / "state.json").write_text(json.dumps({"settings": {"data": {"standardize": "zscore"}}}))
    assert training_standardize(model) == ("zscore", run / "state.json")
    assert training_standardize(run / "exported.keras") == ("zscore", run / "state.json")
    (run / "state.json").write_text("{not json")
    assert training_standardize(model) is None


def test_inspect_the_lab_presets(capsys):
    code, stdout, err = _main(capsys, "inspect", "--model-type", "unet3d", "--preset",
                              "assignment", "--channels", "4", "--num-classes", "4", "--patch",
                              "160x160x16", "--roles", "head")
    assert code == 0, err
    assert "16,318,307" in stdout


def test_volume_cli_errors(tmp_path, capsys):
    code, _, err = _main(capsys, "train", *TINY_3D[:-4], "--num-classes", "3", "--channels", "4",
                         "--data", str(BRATS), "--epochs", "1", "--out", str(tmp_path / "r1"))
    # The lab's labels hold 4 values (0..3): the first file with a 3 is named.
    assert code == 2 and ".h5" in err and "3" in err
    code, _, err = _main(capsys, "train", *TINY_3D, "--data", str(BRATS), "--crop", "32x32",
                         "--epochs", "1", "--out", str(tmp_path / "r2"))
    assert code == 2 and "--crop is for 2D images" in err
    code, _, err = _main(capsys, "train", "--model-type", "unet3d", "--patch", "32x32",
                         "--data", str(BRATS), "--out", str(tmp_path / "r3"))  # argparse's exit
    assert code == 2
    assert "patch must be three positive integers" in err


def test_finetune_a_volume_model_in_two_phases(tmp_path, capsys):
    data = tmp_path / "h5"
    data.mkdir()
    for path in sorted(BRATS.glob("*.h5"))[:2]:
        shutil.copy(path, data / path.name)
    out = tmp_path / "run"
    # Depth 3: two encoder levels, so "top1" unfreezes level 1 and leaves level 0 frozen.
    deeper = [("3" if previous == "--depth" else arg)
              for previous, arg in zip([None, *TINY_3D], TINY_3D)]
    code, stdout, err = _main(capsys, "finetune", *deeper, "--data", str(data),
                              "--phase1-epochs", "1", "--phase2-epochs", "1", "--unfreeze",
                              "top1", "--batch-size", "2", "--seed", "0", "--out", str(out),
                              "--quiet", "--no-tensorboard")
    assert code == 0, err
    rows = _log_rows(out)
    assert [r["phase"] for r in rows] == ["1", "2"]
    state = json.loads((out / "state.json").read_text())
    assert state["settings"]["phases"][1]["unfreeze"] == "top1"
    from vggunet.saving import load_model

    model = load_model(out / "checkpoints" / "last.keras", compile=False)
    trainable = {layer.name: layer.trainable for layer in model.layers if layer.weights}
    # Phase 2 unfroze the deepest encoder level only; the top level stays frozen.
    assert trainable["encoder_level0_conv1"] is False
    assert trainable["encoder_level1_conv1"] is True
    assert trainable["bottleneck_conv1"] is True and trainable["head_conv"] is True


def test_predict_volume_inputs_write_nifti_with_the_scan_geometry(tmp_path, capsys):
    """A plain folder of NIfTI scans (no labels), and one BraTS case folder (4 modalities)."""
    from vggunet.data import load_case
    from vggunet.data.volume_cases import VolumeCase
    from vggunet.models.unet3d import build_unet_3d

    scans = tmp_path / "scans"
    scans.mkdir()
    for path in sorted((HIPPOCAMPUS / "imagesTr").glob("*.nii.gz"))[:2]:
        shutil.copy(path, scans / path.name)
    grey = tmp_path / "grey.keras"
    build_unet_3d((16, 16, 16, 1), depth=2, base_filters=2, n_classes=3,
                  data_format="channels_last", final_activation="softmax").save(grey)
    code, stdout, err = _main(capsys, "predict", "--model", str(grey), "--input", str(scans),
                              "--out", str(tmp_path / "pred"), "--quiet")
    assert code == 0, err
    for scan in sorted(scans.iterdir()):
        written = nibabel.load(tmp_path / "pred" / scan.name)
        source = nibabel.load(scan)
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine)
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2}

    image, _ = load_case(VolumeCase("p", (sorted(BRATS.glob("*.h5"))[0],),
                                    sorted(BRATS.glob("*.h5"))[0]))
    case = tmp_path / "BraTS_001"
    case.mkdir()
    for channel, modality in enumerate(("flair", "t1", "t1ce", "t2")):
        nibabel.save(nibabel.Nifti1Image(image[:48, :48, :, channel], np.eye(4)),
                     case / f"BraTS_001_{modality}.nii.gz")
    four = tmp_path / "four.keras"
    build_unet_3d((16, 16, 16, 4), depth=2, base_filters=2, data_format="channels_last").save(
        four)
    code, stdout, err = _main(capsys, "predict", "--model", str(four), "--input", str(case),
                              "--out", str(tmp_path / "pred4"), "--probabilities", "--quiet")
    assert code == 0, err
    assert nibabel.load(tmp_path / "pred4" / "BraTS_001.nii.gz").shape == (48, 48, 16)
    assert np.load(tmp_path / "pred4" / "BraTS_001_probabilities.npy").shape == (48, 48, 16, 3)
