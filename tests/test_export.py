"""Exports load in their own runtimes and give the Keras model's outputs.

One tiny VGG16 U-Net (the first two blocks under a narrow two-stage decoder, random weights,
float32) is shared by the module;
each export is loaded with the runtime a server would use (tf.saved_model, tf.lite.Interpreter,
onnxruntime) and compared with the Keras model's output on the same raw-pixel input, computed
eagerly (`forward`): `model.predict` would trace a graph per input shape and model.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

from conftest import forward
from test_cli import run_main

TINY = dict(num_classes=2, weights=None, skip_layers=["block1_conv2", "block2_conv2"],
            bottleneck_source="block2_pool", decoder_filters=(16, 8), bottleneck_filters=16)
ATOL = 1e-4  # float32 outputs of the same graph, rounding differs between runtimes


@pytest.fixture(scope="module")
def tiny():
    from vggunet import build_vgg_unet

    return build_vgg_unet("vgg16", precision="float32", **TINY)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    square = (rng.random((1, 64, 64, 3)) * 255).astype("float32")
    other = (rng.random((2, 70, 54, 3)) * 255).astype("float32")  # padded to 72×56, cropped back
    return square, other


@pytest.fixture(scope="module")
def tiny_file(tiny, tmp_path_factory):
    from vggunet.saving import save_model

    tiny.compile("adam", "sparse_categorical_crossentropy")
    path = save_model(tiny, tmp_path_factory.mktemp("model") / "tiny.keras")
    return path


def test_savedmodel_serves_two_sizes_like_keras(tiny, images, tmp_path):
    import tensorflow as tf

    from vggunet.export import export_model

    out = export_model(tiny, tmp_path / "serving", format="savedmodel")
    assert (out / "saved_model.pb").is_file()
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    spec = serve.structured_input_signature[1]["input_image"]
    assert spec.shape.as_list() == [None, None, None, 3]
    for x in images:
        got = serve(input_image=tf.constant(x))["output_0"].numpy()
        want = forward(tiny, x)
        assert got.shape == x.shape[:3] + (2,)
        np.testing.assert_allclose(got, want, atol=ATOL)


def test_tflite_fixed_size_matches_keras_and_takes_any_batch(tiny, images, tmp_path):
    import tensorflow as tf

    from vggunet.export import export_model

    out = export_model(tiny, tmp_path / "m.tflite", input_size=(64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(out))
    detail = interpreter.get_input_details()[0]
    assert list(detail["shape_signature"]) == [-1, 64, 64, 3]
    x = np.concatenate([images[0], images[0][:, ::-1]])
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, forward(tiny, x), atol=ATOL)


def test_onnx_runs_two_sizes_in_onnxruntime(tiny, images, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from vggunet.export import export_model

    out = export_model(tiny, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape) == ("input_image", ["batch", "height", "width", 3])
    assert (outp.name, outp.shape) == ("output_0", ["batch", "height", "width", 2])
    for x in images:
        got = session.run(None, {"input_image": x})[0]
        np.testing.assert_allclose(got, forward(tiny, x), atol=ATOL)


def test_bfloat16_model_exports_in_float32(tiny, images, tmp_path):
    import tensorflow as tf

    from vggunet import build_vgg_unet
    from vggunet.export import export_model, float32_copy

    mixed = build_vgg_unet("vgg16", precision="mixed_bfloat16", **TINY)
    mixed.set_weights(tiny.get_weights())
    copy = float32_copy(mixed)
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    x = images[0]
    want = forward(tiny, x)
    np.testing.assert_allclose(forward(copy, x), want, atol=1e-5)
    # bfloat16 compute really differs, so matching `want` below proves the float32 rebuild.
    assert np.abs(forward(mixed, x) - want).max() > 1e-3

    out = export_model(mixed, tmp_path / "serving", format="savedmodel")
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    got = serve(input_image=tf.constant(x))["output_0"].numpy()
    np.testing.assert_allclose(got, want, atol=ATOL)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_keras_export_drops_optimizer_unless_kept(tiny, tiny_file, images, tmp_path):
    from vggunet.export import export_model
    from vggunet.saving import load_model

    lean = load_model(export_model(tiny_file, tmp_path / "lean.keras"))
    assert getattr(lean, "optimizer", None) is None
    x = images[0]
    np.testing.assert_allclose(forward(lean, x), forward(tiny, x), atol=1e-6)
    full = load_model(export_model(tiny_file, tmp_path / "full.keras", keep_optimizer=True))
    assert full.optimizer is not None and full.loss == "sparse_categorical_crossentropy"


def test_cli_exports_savedmodel_over_an_older_one(tiny_file, images, tmp_path, capsys):
    """In this process: test_cli runs the entry point itself as a subprocess."""
    import tensorflow as tf

    out = tmp_path / "serving"
    out.mkdir()
    (out / "saved_model.pb").write_bytes(b"stale")  # an older export is replaced whole
    proc = run_main(capsys, "export", "--model", str(tiny_file), "--out", str(out),
                    "--format", "savedmodel")
    assert proc.returncode == 0, proc.stderr
    assert f"to {out}" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]  # no temp folders left
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    from vggunet.saving import load_model

    x = images[1]
    np.testing.assert_allclose(serve(input_image=tf.constant(x))["output_0"].numpy(),
                               forward(load_model(tiny_file, compile=False), x),
                               atol=ATOL)


@pytest.mark.parametrize("kwargs, fragments", [
    (dict(out="m.pt", format="torchscript"),
     ["'torchscript'", "valid formats: keras, savedmodel, tflite, onnx"]),
    (dict(out="m.bin"), ["m.bin'", "format="]),
    (dict(out="m.onnx", format="tflite"), ["'.tflite'", "m.onnx"]),
    (dict(out="m.tflite"), ["tflite export needs a fixed input size", "--input-size"]),
    (dict(out="m.tflite", input_size=(2, 2)), ["2x2", ">= 4"]),  # 2 stages pad to 4
    (dict(out="m.keras", input_size=(64, 64)), ["input_size does not apply to keras"]),
    (dict(out="m.onnx", keep_precision=True), ["keep_precision", "onnx"]),
])
def test_bad_requests_raise_export_error_naming_the_value(tiny, tmp_path, kwargs, fragments):
    from vggunet.export import ExportError, export_model

    out = tmp_path / kwargs.pop("out")
    with pytest.raises(ExportError) as exc:
        export_model(tiny, out, **kwargs)
    for fragment in fragments:
        assert fragment in str(exc.value)
    assert not out.exists()


def test_savedmodel_refuses_to_replace_an_unrelated_folder(tiny, tmp_path):
    from vggunet.export import ExportError, export_model

    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty and holds no SavedModel"):
        export_model(tiny, tmp_path, format="savedmodel")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_fixed_size_model_refuses_another_input_size(tmp_path):
    from vggunet import build_unet
    from vggunet.export import ExportError, export_model

    model = build_unet(input_size=(32, 48, 1), n_filters=2, n_classes=2)
    with pytest.raises(ExportError, match="does not match the width 48"):
        export_model(model, tmp_path / "m.tflite", input_size=(32, 32))


def test_missing_model_file_is_named(tmp_path):
    from vggunet.export import export_model

    with pytest.raises(FileNotFoundError, match="nope.keras"):
        export_model(tmp_path / "nope.keras", tmp_path / "out.onnx")


def test_onnx_without_tf2onnx_says_what_to_install(tiny_file, tmp_path, monkeypatch, capsys):
    from vggunet.cli import main

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # makes `import tf2onnx` fail
    assert main(["export", "--model", str(tiny_file), "--out", str(tmp_path / "m.onnx")]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("vggunet export: error: onnx export needs the tf2onnx package")
    assert 'pip install "vggunet[export]"' in lines[0]
    assert not (tmp_path / "m.onnx").exists()


def test_converter_failure_is_one_export_error_and_writes_nothing(tmp_path, monkeypatch):
    import vggunet.export as export
    from vggunet import build_unet

    def broken(*args, **kwargs):
        raise RuntimeError("op FancyConv is neither a custom op nor a flex op\n  at line 3")

    monkeypatch.setattr(export, "_tflite_bytes", broken)
    model = build_unet(input_size=(32, 32, 3), n_filters=2, n_classes=2)
    with pytest.raises(export.ExportError) as exc:
        export.export_model(model, tmp_path / "m.tflite")
    assert str(exc.value) == ("tflite conversion of 'unet' failed: RuntimeError: op FancyConv is "
                              "neither a custom op nor a flex op at line 3")
    assert list(tmp_path.iterdir()) == []
