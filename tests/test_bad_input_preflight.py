"""Bad input caught before any work, or that used to end in a deep traceback or a silently
wrong run: folders that are files, data the model cannot take, class counts and monitors that
do not exist, an unfreeze spec found wrong only after phase 1, a scored split that is not
there, and files that are folders. Same table and rules as tests/test_bad_input.py (each row
through the API, and on the command line: exit 2, one line, no traceback)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from test_bad_input import (  # noqa: E402  (fixtures `shared`, `env` used by name)
    NO_WEIGHTS, Case, Env, _train_argv, assert_one_line_error, check_api_case, check_cli_case,
    env, pair_set, png, run_main, shared, tiny_unet,
)
from vggunet import build_vgg_unet  # noqa: E402
from vggunet.errors import (  # noqa: E402
    ArgumentError, ExportError, ModelFileError, OutputError, PredictionError, WriteError,
)

__all__ = ["env", "shared"]  # fixtures, imported so pytest finds them here


def _dataset(env: Env, size: int = 32, channels: int = 3, n: int = 2, masks=None):
    from vggunet.data import make_dataset

    images, mask_dir = pair_set(env.tmp / "d", n=n, size=(size, size), masks=masks)
    return make_dataset(images, mask_dir, num_classes=5 if masks else 2, channels=channels,
                        batch_size=2, shuffle=False)


def _train(env: Env, model, data, **options):
    from vggunet.training import train

    settings = dict(out_dir=env.tmp / "run", epochs=1, tensorboard=False, verbose=0,
                    jit_compile=False, metrics=("miou",))
    return train(model, data, **{**settings, **options})


def _blocker(env: Env) -> None:
    (env.tmp / "afile").write_text("a file where a folder should be")
    pair_set(env.tmp / "d", size=(32, 32))


def _five_class_masks(env: Env) -> None:
    mask = (np.arange(32 * 32).reshape(32, 32) % 5).astype(np.uint8)
    pair_set(env.tmp / "d", size=(32, 32), masks=[mask, mask])


def _evaluate_argv(env: Env, *extra: str) -> list[str]:
    return ["evaluate", "--model", str(env.shared.model_path), "--images",
            str(env.tmp / "d" / "images"), "--masks", str(env.tmp / "d" / "masks"), "--quiet",
            *extra]


def _fixed_model():
    return build_vgg_unet(input_shape=(64, 64, 3), weights=None, num_classes=2,
                          decoder_filters=(8,) * 5, bottleneck_filters=8, precision="float32")


def _evaluate(env: Env, model, data, **options):
    from vggunet.evaluate import evaluate

    return evaluate(model, data, verbose=False, **options)


def _predict_folder(env: Env, folder, **options):
    from vggunet.inference import predict_folder

    return predict_folder(keras.saving.load_model(env.shared.model_path), folder,
                          env.tmp / "out", verbose=False, **options)


CASES: list[Case] = [
    Case("run_folder_is_a_file",
         lambda e: _train(e, tiny_unet(), _dataset(e), out_dir=e.tmp / "afile"), WriteError,
         ("cannot create the run folder", "afile'", "is a file, not a folder"), setup=_blocker,
         cli=lambda e: [*_train_argv(e, *_data_dirs(e))[:-3], "--out", str(e.tmp / "afile"),
                        "--quiet"]),
    Case("run_folder_under_a_file",
         lambda e: _train(e, tiny_unet(), _dataset(e), out_dir=e.tmp / "afile" / "run"),
         WriteError, ("afile/run", "is a file, not a folder"), setup=_blocker,
         cli=lambda e: [*_train_argv(e, *_data_dirs(e))[:-3], "--out",
                        str(e.tmp / "afile" / "run"), "--quiet"]),
    Case("export_under_a_file",
         lambda e: _export(e.shared.model_path, e.tmp / "afile" / "x.keras"), ExportError,
         ("cannot create the folder of the export", "is a file, not a folder"), setup=_blocker,
         cli=lambda e: ["export", "--model", str(e.shared.model_path), "--out",
                        str(e.tmp / "afile" / "x.keras")]),
    Case("evaluate_out_under_a_file",
         lambda e: _evaluate(e, tiny_unet(), _dataset(e), out_json=e.tmp / "afile" / "m.json"),
         WriteError, ("afile", "is a file, not a folder"), setup=_blocker,
         cli=lambda e: _evaluate_argv(e, "--out", str(e.tmp / "afile" / "m.json")),
         cli_fragments=("--out", "afile", "is a file, not a folder")),
    Case("model_channels_differ_from_the_data",
         lambda e: _train(e, tiny_unet(), _dataset(e, channels=1)), ArgumentError,
         ("train_data has images of shape (None, None, None, 1)", "1 channel(s), not 3",
          "--channels 3"),
         setup=_blocker,
         cli=lambda e: ["finetune", "--model", str(e.shared.model_path), "--images",
                        str(e.tmp / "d" / "images"), "--masks", str(e.tmp / "d" / "masks"),
                        "--channels", "1", "--out", str(e.tmp / "run"), "--quiet"],
         cli_fragments=("1 channel(s), not 3", "--channels 3")),
    Case("fixed_size_model_other_image_size",
         lambda e: _train(e, _fixed_model(), _dataset(e)), ArgumentError,
         ("(None, 32, 32, 3)", "(None, 64, 64, 3)", "fixed input size", "--size 64x64"),
         cli=lambda e: _train_argv(e, *pair_set(e.tmp / "d", size=(32, 32)), "--input-size",
                                   "64x64"),
         cli_fragments=("fixed input size", "--size 64x64")),
    Case("evaluate_fixed_size_model_other_image_size",
         lambda e: _evaluate(e, _fixed_model(), _dataset(e)), ArgumentError,
         ("dataset has images of shape (None, 32, 32, 3)", "fixed input size")),
    Case("num_classes_beyond_the_model_outputs",
         lambda e: _train(e, tiny_unet(), _dataset(e), num_classes=5), ArgumentError,
         ("outputs 2 channel(s)", "num_classes=5"), setup=_five_class_masks,
         cli=lambda e: ["finetune", "--model", str(e.shared.model_path), "--images",
                        str(e.tmp / "d" / "images"), "--masks", str(e.tmp / "d" / "masks"),
                        "--num-classes", "5", "--out", str(e.tmp / "run"), "--quiet"]),
    Case("monitor_that_is_not_logged",
         lambda e: _train(e, tiny_unet(), _dataset(e), val_data=_dataset(e),
                          monitor="val_mean_iouu"), ArgumentError,
         ("monitor 'val_mean_iouu'", "val_loss", "Did you mean 'val_mean_iou'?"),
         cli=lambda e: _train_argv(e, *pair_set(e.tmp / "d", n=4, size=(32, 32)),
                                   "--val-split", "0.5", "--monitor", "val_mean_iouu")),
    Case("unfreeze_spec_found_before_phase_1",
         lambda e: _finetune_block9(e), ArgumentError, ("['block9']", "matches no layer"),
         cli=lambda e: ["finetune", "--images", *_dirs(pair_set(e.tmp / "d", size=(32, 32))),
                        *NO_WEIGHTS, "--phase1-epochs", "1", "--phase2-epochs", "1",
                        "--unfreeze", "block9", "--out", str(e.tmp / "run"), "--quiet"]),
    Case("predict_empty_folder",
         lambda e: _predict_folder(e, e.tmp / "empty"), PredictionError,
         ("'{tmp}/empty' has no images", ".png"),
         setup=lambda e: (e.tmp / "empty").mkdir(),
         cli=lambda e: ["predict", "--model", str(e.shared.model_path), "--input",
                        str(e.tmp / "empty"), "--out", str(e.tmp / "out")]),
    Case("predict_class_names_count",
         lambda e: _predict_folder(e, e.tmp / "in", class_names=["a", "b", "c"]),
         PredictionError, ("class_names has 3 names", "predicts 2 classes"),
         setup=lambda e: png(e.tmp / "in" / "a.png", np.full((32, 32), 9, np.uint8)),
         cli=lambda e: ["predict", "--model", str(e.shared.model_path), "--input",
                        str(e.tmp / "in"), "--out", str(e.tmp / "out"), "--class-names",
                        "a,b,c"]),
    Case("inspect_unknown_role",
         lambda e: _format_roles(("skip", "skipp")), ArgumentError,
         ("got 'skipp'", "Did you mean 'skip'?"),
         cli=lambda e: ["inspect", *NO_WEIGHTS, "--roles", "skipp"]),
    Case("model_file_that_is_a_folder",
         lambda e: keras_load(e.tmp), ModelFileError, ("'{tmp}' is a folder, not a .keras",),
         cli=lambda e: ["predict", "--model", str(e.tmp), "--input", str(e.tmp), "--out",
                        str(e.tmp / "out")]),
    Case("image_path_given_as_an_image",
         lambda e: _predict_proba("cat.png"), PredictionError,
         ("must hold numbers", "'cat.png' looks like a path", "predict_image_file")),
    Case("volume_path_given_as_a_volume",
         lambda e: _predict_volume("brain.nii.gz"), PredictionError,
         ("volume must hold numbers", "'brain.nii.gz' looks like a path",
          "vggunet.data.read_volume")),
    Case("export_input_size_as_text",
         lambda e: _export(tiny_unet(), e.tmp / "x.tflite", input_size="32x32"), ExportError,
         ("input_size must be (H, W) of positive integers", "'32x32'")),
    Case("export_of_something_not_a_model",
         lambda e: _export(42, e.tmp / "x.keras"), ExportError,
         ("Keras model or the path of a .keras file", "got int")),
    Case("training_data_of_plain_values",
         lambda e: _train(e, tiny_unet(), [1, 2, 3]), ArgumentError,
         ("train_data must be a tf.data.Dataset", "got a list of 3 int(s)")),
    Case("output_path_that_is_a_folder",
         lambda e: _predict_into_folder(e), OutputError,
         ("cannot write output", "it is a folder")),
    Case("binary_masks_for_a_one_class_model", lambda e: _binary_masks_load(e), None,
         note="num_classes=1 is the sigmoid binary model: its masks hold 0 and 1"),
]


def _data_dirs(env: Env):
    return env.tmp / "d" / "images", env.tmp / "d" / "masks"


def _dirs(pair: tuple) -> list[str]:
    return [str(pair[0]), "--masks", str(pair[1])]


def _export(model, out, **options):
    from vggunet.export import export_model

    return export_model(model, out, **options)


def _finetune_block9(env: Env) -> None:
    from vggunet.training import finetune

    try:
        finetune(tiny_unet(), _dataset(env), out_dir=env.tmp / "run", phase1_epochs=1,
                 phase2_epochs=1, unfreeze="block9", tensorboard=False, verbose=0)
    finally:
        # Found before phase 1 trained: no epoch was logged.
        assert not (env.tmp / "run" / "log.csv").exists()


def _format_roles(roles) -> str:
    from vggunet.transfer.inspect import format_layers

    return format_layers(tiny_unet(), roles)


def keras_load(path):
    from vggunet.saving import load_model

    return load_model(path)


def _predict_proba(image):
    from vggunet.inference import predict_proba

    return predict_proba(tiny_unet(), image)


def _predict_volume(volume):
    import keras

    from vggunet.inference import predict_volume

    model = keras.Sequential([keras.Input((None, None, None, 1)),
                              keras.layers.Conv3D(2, 1, activation="softmax")])
    return predict_volume(model, volume, patch=4)


def _predict_into_folder(env: Env):
    from vggunet.inference import predict_image_file

    source = png(env.tmp / "a.png", np.full((32, 32), 9, np.uint8))
    (env.tmp / "taken").mkdir()
    try:
        predict_image_file(tiny_unet(), source, env.tmp / "taken", None, verbose=False)
    except OutputError as error:
        assert not str(error).startswith("("), str(error)  # a message, not an args tuple
        raise


def _binary_masks_load(env: Env) -> None:
    from vggunet.data import load_mask

    path = png(env.tmp / "m.png", np.array([[0, 1], [1, 0]], np.uint8))
    np.testing.assert_array_equal(load_mask(path, num_classes=1), [[0, 1], [1, 0]])
    png(env.tmp / "bad.png", np.array([[0, 2]], np.uint8))
    with pytest.raises(Exception, match=r"value\(s\) 2 outside the valid class range 0\.\.1"):
        load_mask(env.tmp / "bad.png", num_classes=1)


CLI_CASES = [c for c in CASES if c.cli is not None]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_api(case: Case, env: Env):
    check_api_case(case, env)


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli(case: Case, env: Env, capsys):
    check_cli_case(case, env, capsys)


def test_evaluate_refuses_a_split_that_a_flat_folder_lacks(env: Env, capsys):
    # Training takes a flat image/mask folder as any split; scoring it as "test" would count
    # the training images. --split all says what is meant.
    images, _ = pair_set(env.tmp / "flat", size=(32, 32))
    argv = ["evaluate", "--model", str(env.shared.model_path), "--data", str(env.tmp / "flat"),
            "--quiet"]
    assert_one_line_error(*run_main([*argv, "--split", "test"], capsys),
                          ["--split test", "has no test split", "--split all"], "evaluate")
    code, _ = run_main([*argv, "--split", "all"], capsys)
    assert code == 0 and images.is_dir()
