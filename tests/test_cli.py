"""The `vggunet` command: exit codes and one-line errors as a subprocess, as a user runs it;
training and the commands that read its run folder (resume, predict, evaluate, export) in
process (`run_main`), which skips a TensorFlow start-up each. (`python -m vggunet train` runs
to the end as a process in tests/test_distribute.py and holds a run lock as one in
tests/test_run_folder.py.)

A tiny ISBI copy (4 tiles at 64×64) and VGG16's first block or two keep each training run to
seconds. The runs build on each other (train → resume → predict/evaluate/export), so they share
one module-scoped training run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import ONE_BLOCK_FLAGS, SHALLOW_FLAGS

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO.parent / "shared" / "data" / "isbi2012"
SAMPLE = REPO / "vggunet" / "sample" / "isbi"
# VGG16's first two blocks under a two-stage decoder (conftest.shallow_unet): a training step
# traces in a third of the full encoder's time, and the CLI's model flags still build it.
SHALLOW = list(SHALLOW_FLAGS)
TINY_MODEL = ["--weights", "none", *SHALLOW, "--precision", "float32"]
# VGG16's first block under one decoder stage: the shared run's train, resume, predict and
# evaluate steps trace in about 60% of the two-block model's time.
ONE_BLOCK_MODEL = ["--weights", "none", *ONE_BLOCK_FLAGS, "--precision", "float32"]

# TensorFlow's C++ runtime logs a few lines to stderr on import and first use whatever
# TF_CPP_MIN_LOG_LEVEL says (absl "I0000 ..."/"E0000 ..." lines); they are not ours.
_TF_NOISE = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]"
                       r"|WARNING: All log messages before absl)")


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "vggunet", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """`vggunet <args>` run in this process, as `run_cli` reports it: no interpreter and
    TensorFlow start-up (5-10 s on the CI machine). The subprocess runs here cover the entry
    point itself. `capsys` None (a module-scoped fixture has none) captures with
    `contextlib.redirect_stdout` / `redirect_stderr` instead."""
    import contextlib
    import io

    from vggunet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if capsys is None:
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(err))
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    if capsys is not None:
        return subprocess.CompletedProcess(["vggunet", *args], code, *capsys.readouterr())
    return subprocess.CompletedProcess(["vggunet", *args], code, out.getvalue(), err.getvalue())


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr without TensorFlow's C++ start-up logs and Python warnings."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not _TF_NOISE.match(ln)]
    out, skip = [], False
    for ln in lines:  # drop `file.py:N: SomeWarning: ...` and its source line
        if re.match(r"^\S+\.py:\d+: \w*Warning", ln):
            skip = True
            continue
        if skip and ln.startswith("  "):
            skip = False
            continue
        skip = False
        out.append(ln)
    return out


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (f"exit {proc.returncode}\nstdout:\n{proc.stdout}\n"
                                  f"stderr:\n{proc.stderr}")


def assert_usage_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = stderr_lines(proc)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("vggunet "), lines[0]
    assert ": error: " in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_isbi(tmp_path_factory) -> Path:
    """4 ISBI tiles downscaled to 64×64 in `<tmp>/isbi/{image,label}`."""
    from vggunet.demo import make_sample

    src = ISBI if (ISBI / "image").is_dir() else SAMPLE
    root = tmp_path_factory.mktemp("data") / "isbi"
    make_sample(src, root, count=4, size=64)
    return root


@pytest.fixture(scope="module")
def trained(tiny_isbi, tmp_path_factory) -> Path:
    """A run folder after one epoch of `vggunet train` (in process)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    proc = run_main(None, "train", "--data", str(tiny_isbi), "--mask-format", "binary",
                    *ONE_BLOCK_MODEL, "--epochs", "1", "--batch-size", "2", "--val-split",
                    "0.25", "--seed", "0", "--out", str(out), "--quiet")
    assert_ok(proc)
    assert "best checkpoint:" in proc.stdout
    return out


def test_help_lists_every_subcommand():
    proc = run_cli("--help")
    assert_ok(proc)
    for cmd in ("inspect", "train", "finetune", "predict", "evaluate", "export", "demo"):
        assert cmd in proc.stdout


def test_inspect_prints_layer_rows_with_freeze(capsys):
    proc = run_main(
        capsys, "inspect", "--backbone", "vgg16", "--input-size", "224x224", "--freeze", "block4",
        "--decoder-filters", "8,8,8,8,8", "--bottleneck-filters", "8")
    assert_ok(proc)
    header = next(ln for ln in proc.stdout.splitlines() if "name" in ln and "trainable" in ln)
    assert "#" in header and "output shape" in header
    rows = {ln.split()[1]: ln for ln in proc.stdout.splitlines()
            if re.match(r"^\s*\d+\s+\S+", ln)}
    assert "block4_conv1" in rows and "(None, 28, 28, 512)" in rows["block4_conv1"]
    assert " no " in rows["block4_conv1"]  # frozen by the block4 prefix
    assert " yes " in rows["block1_conv1"]
    assert " yes " in rows["decoder_stage1_conv1"]


def test_inspect_builds_a_shallow_unet_from_skip_layer_flags(capsys):
    from vggunet.cli import main

    assert main(["inspect", "--input-size", "64x64", *SHALLOW]) == 0
    rows = {ln.split()[1]: ln for ln in capsys.readouterr().out.splitlines()
            if re.match(r"^\s*\d+\s+\S+", ln)}
    assert rows["block1_conv2"].split()[-1] == rows["block2_conv2"].split()[-1] == "skip"
    assert not any(name.startswith("block3") for name in rows)
    assert "(None, 16, 16, 16)" in rows["bottleneck_conv2"]  # block2_pool, stride 4
    assert {name.split("_")[1] for name in rows if name.startswith("decoder_")} == {
        "stage1", "stage2"}
    assert "(None, 64, 64, 2)" in rows["head_conv"]


def test_train_writes_checkpoints_log_and_state(trained):
    assert (trained / "checkpoints" / "last.keras").is_file()
    assert (trained / "checkpoints" / "best.keras").is_file()
    assert (trained / "state.json").is_file()
    rows = (trained / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # header + 1 epoch


def test_resume_continues_to_the_new_epoch_count(tiny_isbi, trained, capsys):
    proc = run_main(
        capsys, "train", "--data", str(tiny_isbi), "--mask-format", "binary", *ONE_BLOCK_MODEL,
        "--epochs", "2", "--batch-size", "2", "--val-split", "0.25", "--seed", "0", "--out",
        str(trained), "--resume", "--quiet")
    assert_ok(proc)
    assert "epochs completed: 2" in proc.stdout
    rows = (trained / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3


def test_predict_folder_and_single_file_with_tiles(tiny_isbi, trained, tmp_path, capsys):
    from PIL import Image

    model = str(trained / "checkpoints" / "best.keras")
    proc = run_main(
        capsys, "predict", "--model", model, "--input", str(tiny_isbi / "image"), "--out",
        str(tmp_path / "pred"))
    assert_ok(proc)
    masks = sorted((tmp_path / "pred").glob("[0-9].png"))
    assert len(masks) == 4
    assert len(list((tmp_path / "pred").glob("*_overlay.png"))) == 4
    assert Image.open(masks[0]).size == (64, 64)

    proc = run_main(
        capsys, "predict", "--model", model, "--input", str(tiny_isbi / "image" / "0.png"),
        "--out", str(tmp_path / "one"), "--tile", "32", "--overlap", "8", "--tta", "--no-overlay")
    assert_ok(proc)
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["0.png"]


def test_predict_mirror_pad_matches_the_python_api(tiny_isbi, trained, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from vggunet.predict import predict_mask, read_image
    from vggunet.saving import load_model

    model_path = trained / "checkpoints" / "best.keras"
    source = tiny_isbi / "image" / "1.png"
    proc = run_main(
        capsys, "predict", "--model", str(model_path), "--input", str(source), "--out",
        str(tmp_path / "mp"), "--mirror-pad", "16", "--no-overlay")
    assert_ok(proc)
    written = np.asarray(Image.open(tmp_path / "mp" / "1.png"))
    model = load_model(model_path, compile=False)
    expected = predict_mask(model, read_image(source, 3), mirror_pad=16)
    np.testing.assert_array_equal(written, expected)

    proc = run_main(
        capsys, "predict", "--model", str(model_path), "--input", str(source), "--out",
        str(tmp_path / "bad"), "--mirror-pad", "-3")
    assert_usage_error(proc, "--mirror-pad")


def test_evaluate_writes_metrics_json(tiny_isbi, trained, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    proc = run_main(
        capsys, "evaluate", "--model", str(trained / "checkpoints" / "best.keras"), "--images",
        str(tiny_isbi / "image"), "--masks", str(tiny_isbi / "label"), "--mask-format", "binary",
        "--class-names", "membrane,cell", "--out", str(out))
    assert_ok(proc)
    assert "mean IoU" in proc.stdout
    scores = json.loads(out.read_text())
    assert scores["class_names"] == ["membrane", "cell"]
    assert scores["num_images"] == 4
    assert 0.0 <= scores["mean_iou"] <= 1.0
    assert abs(scores["pixel_accuracy"] + scores["pixel_error"] - 1.0) < 1e-9


def test_export_writes_a_loadable_keras_file(trained, tmp_path, capsys):
    out = tmp_path / "exported" / "model.keras"
    proc = run_main(
        capsys, "export", "--model", str(trained / "checkpoints" / "best.keras"), "--out",
        str(out))
    assert_ok(proc)
    assert out.is_file()
    from vggunet.saving import load_model

    model = load_model(out, compile=False)
    assert model.output_shape[-1] == 2


def test_export_rejects_other_formats(trained, tmp_path, capsys):
    proc = run_main(
        capsys, "export", "--model", str(trained / "checkpoints" / "best.keras"), "--out",
        str(tmp_path / "m.pt"), "--format", "torchscript")
    assert_usage_error(proc, "'torchscript'", "valid formats: keras, savedmodel, tflite, onnx")


@pytest.mark.parametrize("argv, fragments", [
    (["train", "--data", "x", "--epochs", "-1", "--out", "o"], ["--epochs", "-1"]),
    (["inspect", "--input-size", "0x0"], ["--input-size", "0x0"]),
    (["train", "--data", "x", "--mask-format", "rgb", "--out", "o"], ["--mask-format", "rgb"]),
    (["finetune", "--data", "x", "--phase2-lr", "0", "--out", "o"], ["--phase2-lr"]),
    (["finetune", "--data", "x", "--phase1-epochs", "-3", "--out", "o"], ["--phase1-epochs"]),
    (["train", "--val-split", "1.5", "--out", "o"], ["--val-split"]),
    (["train", "--decoder-filters", "64,0", "--out", "o"], ["--decoder-filters"]),
    (["train", "--bn-momentum", "1.5", "--out", "o"], ["--bn-momentum", "[0, 1)"]),
    (["finetune", "--recalibrate-bn", "-2", "--out", "o"], ["--recalibrate-bn"]),
    (["train", "--crop", "axb", "--out", "o"], ["--crop"]),
    (["inspect", "--bottleneck-source", "block2_pool,block3_pool"], ["--bottleneck-source"]),
    (["inspect", "--skip-layers", ","], ["--skip-layers", "layer names"]),
    (["predict", "--model", "m.keras", "--input", "in", "--out", "o", "--tile", "0"],
     ["--tile"]),
    (["export", "--model", "m.keras"], ["--out"]),
    (["nosuchcommand"], ["invalid choice"]),
])
def test_bad_flag_values_give_one_line_and_exit_2(argv, fragments, capsys):
    from vggunet.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vggunet"), lines
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("argv, fragments", [
    (["train", "--data", "{tmp}/nope", "--weights", "none", "--out", "{tmp}/o"],
     ["nope", "does not exist"]),
    (["train", "--out", "{tmp}/o"], ["--data DIR, --images DIR --masks DIR or --pairs FILE"]),
    (["train", "--images", "{tmp}", "--out", "{tmp}/o"], ["--masks"]),
    (["export", "--model", "{tmp}/missing.keras", "--out", "{tmp}/x.keras"], ["missing.keras"]),
    (["predict", "--model", "{tmp}/m.keras", "--input", "{tmp}/none.png", "--out", "{tmp}/o"],
     ["none.png"]),
    (["train", "--data", "{data}", "--palette", "[[0,0", "--mask-format", "palette",
      "--out", "{tmp}/o"], ["--palette"]),
    (["train", "--data", "{data}", "--mask-format", "index", "--weights", "none",
      "--out", "{tmp}/o"], ["mask_format='binary'"]),
    (["inspect", "--skip-layers", "block1_conv2,nope", *SHALLOW[2:]], ["['nope']", "block2_conv2"]),
    # Without --bottleneck-source the registry's (stride 16) cannot feed 2 decoder stages.
    (["inspect", *SHALLOW[:2], "--decoder-filters", "8,8"], ["stride 16", "2 decoder stages"]),
])
def test_bad_inputs_give_one_line_and_exit_2_in_process(argv, fragments, tmp_path, tiny_isbi,
                                                        capsys):
    from vggunet.cli import main

    argv = [a.format(tmp=tmp_path, data=tiny_isbi) for a in argv]
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"vggunet {argv[0]}: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_data_folder_is_one_line_without_traceback(tmp_path):
    proc = run_cli("train", "--data", str(tmp_path / "nope"), *TINY_MODEL, "--epochs", "1",
                   "--out", str(tmp_path / "o"))
    assert_usage_error(proc, "nope")


def test_unknown_loss_is_one_line(tiny_isbi, tmp_path, capsys):
    from vggunet.cli import main

    code = main(["train", "--data", str(tiny_isbi), "--mask-format", "binary", *TINY_MODEL,
                 "--epochs", "1", "--loss", "hinge", "--out", str(tmp_path / "o")])
    assert code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "hinge" in err[0]


def test_finetune_with_separate_validation_folders_and_augmentation(tiny_isbi, tmp_path,
                                                                     capsys):
    # In process (`main`) to save a TensorFlow start-up: the commands' subprocess behaviour
    # (exit codes, one-line errors) is checked by the other tests here.
    from vggunet.cli.app import main

    out = tmp_path / "ft"
    code = main(["finetune", "--images", str(tiny_isbi / "image"),
                 "--masks", str(tiny_isbi / "label"), "--val-images", str(tiny_isbi / "image"),
                 "--val-masks", str(tiny_isbi / "label"), "--mask-format", "binary",
                 *TINY_MODEL, "--phase1-epochs", "1", "--phase2-epochs", "1",
                 "--phase1-lr", "1e-3", "--phase2-lr", "1e-4", "--unfreeze", "top1",
                 "--crop", "32x32", "--augment", "flip,rot90", "--batch-size", "4",
                 "--early-stopping", "3", "--seed", "1", "--out", str(out), "--quiet",
                 "--decoder-batchnorm", "--skip-batchnorm", "--bn-momentum", "0.8",
                 "--recalibrate-bn", "2"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "data: 4 training pairs, 4 validation pairs" in stdout
    assert "epochs completed: 2" in stdout
    state = json.loads((out / "state.json").read_text())
    assert state["completed_epochs"] == 2 and state["phase"] == 2 and state["finished"]
    assert (out / "checkpoints" / "best.keras").is_file()
    from vggunet import load_model

    model = load_model(out / "checkpoints" / "last.keras", compile=False)
    # --unfreeze top1 on this two-block encoder: block2 trains in phase 2, block1 stays frozen.
    assert model.get_layer("block2_conv1").trainable
    assert not model.get_layer("block1_conv1").trainable
    skip_bn = model.get_layer("decoder_stage1_skip_bn")
    assert skip_bn.momentum == 0.8
    assert model.get_layer("decoder_stage2_conv2_bn").momentum == 0.8


def test_imagenet_offline_is_a_one_line_how_to(tiny_isbi, tmp_path):
    from vggunet.encoders import get_encoder_spec
    from vggunet.weights import keras_cache_dir

    if (keras_cache_dir() / get_encoder_spec("vgg16").weights_file).is_file():
        pytest.skip("ImageNet weights are cached here")
    env_home = tmp_path / "keras_home"  # an empty cache: never pick up a real one
    proc = subprocess.run(
        [sys.executable, "-m", "vggunet", "train", "--data", str(tiny_isbi), "--mask-format",
         "binary", "--weights", "imagenet", "--decoder-filters", "32,16,16,8,8",
         "--bottleneck-filters", "32", "--epochs", "1", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, KERAS_HOME=str(env_home), TF_CPP_MIN_LOG_LEVEL="3"),
    )
    if proc.returncode == 0:
        pytest.skip("ImageNet weights could be downloaded (online machine)")
    line = assert_usage_error(proc, "ImageNet weights", "--weights none")
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in line


# ---------------------------------------------------------------------------------------------
# Errors, --debug, --quiet, option lists (in-process)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory) -> Path:
    """A one-stage VGG16 U-Net (block1 only) saved as .keras: loads and predicts in a blink."""
    from vggunet import build_vgg_unet, save_model

    model = build_vgg_unet("vgg16", input_shape=(None, None, 3), num_classes=2, weights=None,
                           skip_layers=["block1_conv2"], bottleneck_source="block1_pool",
                           decoder_filters=(8,), bottleneck_filters=8, precision="float32")
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny.keras")


def test_debug_shows_the_traceback_of_a_user_error(tmp_path, capsys):
    from vggunet.cli import main
    from vggunet.errors import MissingFileError

    argv = ["predict", "--model", "m.keras", "--input", str(tmp_path / "none.png"),
            "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == \
        f"vggunet predict: error: --input {tmp_path / 'none.png'} does not exist"
    with pytest.raises(MissingFileError, match="none.png"):
        main(["--debug", *argv])


def test_an_unexpected_exception_is_a_bug_with_a_traceback(tmp_path, monkeypatch):
    """Only the VggUnetError family becomes a one-line message; anything else propagates."""
    import vggunet.cli.predict
    from vggunet.cli import main

    def broken(args):
        raise KeyError("internal")

    monkeypatch.setattr(vggunet.cli.predict, "_check_predict_args", broken)
    with pytest.raises(KeyError, match="internal"):
        main(["predict", "--model", "m.keras", "--input", "x", "--out", str(tmp_path)])


def test_predict_and_evaluate_quiet_hide_only_the_progress_bar(tiny_model_file, tiny_isbi,
                                                               tmp_path, capsys):
    from vggunet.cli import main

    images = str(tiny_isbi / "image")
    predict = ["predict", "--model", str(tiny_model_file), "--input", images, "--no-overlay"]
    evaluate = ["evaluate", "--model", str(tiny_model_file), "--images", images,
                "--masks", str(tiny_isbi / "label"), "--mask-format", "binary"]
    capsys.readouterr()
    assert main([*predict, "--out", str(tmp_path / "a")]) == 0
    loud = capsys.readouterr().out
    assert "4/4" in loud and "wrote 4 file(s)" in loud
    assert main([*predict, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    quiet = capsys.readouterr().out
    assert "4/4" not in quiet and "wrote 4 file(s)" in quiet
    assert quiet.count(".png") == 4  # the written masks are listed
    for name in ("0.png", "3.png"):
        assert (Image.open(tmp_path / "a" / name).tobytes()
                == Image.open(tmp_path / "b" / name).tobytes())

    assert main(evaluate) == 0
    loud = capsys.readouterr().out
    assert "4/4" in loud and "evaluating" in loud and "mean IoU" in loud
    assert main([*evaluate, "--quiet"]) == 0
    quiet = capsys.readouterr().out
    assert "4/4" not in quiet and "evaluating" not in quiet and "mean IoU" in quiet


def test_predict_single_file_overlap_and_tiles(tiny_model_file, tiny_isbi, tmp_path, capsys):
    import numpy as np

    from vggunet.cli import main
    from vggunet.predict import predict_tiled, read_image
    from vggunet.saving import load_model

    source = tiny_isbi / "image" / "2.png"
    out = tmp_path / "tiles"
    capsys.readouterr()
    assert main(["predict", "--model", str(tiny_model_file), "--input", str(source),
                 "--out", str(out), "--tile", "32", "--overlap", "4"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["2.png", "2_overlay.png"]
    # 64 px in 32 px tiles with 4 px overlap: 3 × 3 tiles, in 3 batches of at most 4.
    assert "3/3" in capsys.readouterr().out
    model = load_model(tiny_model_file, compile=False)
    expected = predict_tiled(model, read_image(source, 3), tile=32, overlap=4, verbose=False)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "2.png")), expected.argmax(-1))
    capsys.readouterr()
    assert main(["predict", "--model", str(tiny_model_file), "--input", str(source),
                 "--out", str(out), "--overlap", "4"]) == 2
    assert "--overlap needs --tile" in capsys.readouterr().err


def test_cli_option_lists_are_the_api_ones():
    """One source (`vggunet.choices`): the parser's choices and the API's lists are one object."""
    import argparse

    from vggunet import choices
    from vggunet.data.masks import MASK_FORMATS
    from vggunet.data.pipeline import SAMPLE_WEIGHTS
    from vggunet.export import FORMATS
    from vggunet.losses.factory import _COMBINATIONS, _LOSS_CLASSES, LOSS_NAMES
    from vggunet.metrics.factory import _METRIC_CLASSES, _VOLUME_METRIC_CLASSES, METRIC_NAMES
    from vggunet.models.blocks import DECODERS
    from vggunet.models.precision import PRECISIONS

    assert FORMATS is choices.EXPORT_FORMATS and DECODERS is choices.DECODERS
    assert PRECISIONS is choices.PRECISIONS and MASK_FORMATS is choices.MASK_FORMATS
    assert SAMPLE_WEIGHTS is choices.SAMPLE_WEIGHTS
    # The factories' tables implement exactly the listed names.
    assert set(LOSS_NAMES) == set(_LOSS_CLASSES) | set(_COMBINATIONS)
    assert set(METRIC_NAMES) == set(_METRIC_CLASSES) | set(_VOLUME_METRIC_CLASSES)
    flags = {}
    from vggunet.cli import build_parser

    for command in ("train",):
        parser = next(a for a in build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction)).choices[command]
        flags.update({a.option_strings[0]: a.choices for a in parser._actions
                      if a.option_strings and a.choices})
    assert flags["--decoder"] is choices.DECODERS and flags["--precision"] is choices.PRECISIONS
    assert flags["--mask-format"] is choices.MASK_FORMATS
    assert flags["--sample-weights"] is choices.SAMPLE_WEIGHTS
