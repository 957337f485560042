"""Exporting a trained model for serving: `.keras`, TensorFlow SavedModel, TFLite and ONNX.

Every format is written atomically (a temporary file or folder beside the destination, then a
rename), so a failed export never leaves half a model where a good one was.

- `keras`: the Keras 3 file, through `vggunet.save_model`; precision kept, optimizer state
  dropped unless asked for.
- `savedmodel`: a SavedModel folder for TF Serving, written by Keras's `ExportArchive`
  (`model.export`). Signature `serving_default`, input `input_image` float32 raw pixels
  `(batch, H, W, C)` with batch, H and W free, output `output_0` float32 `(batch, H, W, K)`.
  vggunet models pad to a multiple of 32 inside and crop back, so any H×W >= 32 works.
- `tflite`: TFLite's built-in kernels need the channel count of every convolution input to be
  static, and the any-size graph (dynamic pad, `UpSampling2D`) loses it, so TFLite files are
  exported for one H×W (`input_size`, default the model's own fixed size); the batch stays free.
- `onnx`: through `tf2onnx` (Keras's `model.export(format="onnx")`), batch, H and W free; needs
  the `export` extra (`pip install "vggunet[export]"`).

Mixed precision: a model built with `precision="mixed_bfloat16"`/`"mixed_float16"` is rebuilt
from its config with float32 compute and its weights copied over before a SavedModel, TFLite or
ONNX export (the variables are float32 already, so nothing is lost; TFLite and tf2onnx do not
convert bfloat16 compute graphs, and float32 runs everywhere). `keep_precision=True` keeps the
mixed policy in a SavedModel for GPUs that run bfloat16 natively.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import keras
import numpy as np

from vggunet import choices
from vggunet.errors import ExportError
from vggunet.fileio import atomic_replace_dir, atomic_write, make_folder, make_temp_dir
from vggunet.transfer.inspect import all_layers

FORMATS = choices.EXPORT_FORMATS
_SUFFIXES = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}
_REDUCED_POLICIES = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")
_TF2ONNX_CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"
ONNX_INSTALL_HINT = 'pip install "vggunet[export]" (tf2onnx and onnxruntime)'


def infer_format(out: str | os.PathLike) -> str:
    """The export format a destination path implies by its suffix.

    Args:
        out: the destination, e.g. `"model.onnx"`.

    Returns:
        `"keras"`, `"tflite"` or `"onnx"`.

    Raises:
        ExportError: the suffix says nothing (a SavedModel is a folder: name the format).

    Example:
        >>> infer_format("runs/best.tflite")
        'tflite'
        >>> infer_format("serving/model")
        Traceback (most recent call last):
        ...
        vggunet.errors.ExportError: cannot tell the export format from 'serving/model' ...
    """
    suffix = Path(out).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ExportError(
            f"cannot tell the export format from {str(out)!r} (suffix {suffix!r}); "
            f"pass format= one of {', '.join(FORMATS)}"
        )
    return _SUFFIXES[suffix]


def float32_copy(model: keras.Model) -> keras.Model:
    """A copy of `model` computing in float32, with the same weights, for export.

    Every layer whose dtype policy is mixed or half precision is rebuilt with `"float32"`; layers
    already pinned to float32 stay so. The copy has no optimizer or compile state.

    Args:
        model: a functional or sequential Keras model, e.g. built with
            `precision="mixed_bfloat16"`.

    Returns:
        A new model with the same architecture and weights, computing in float32.

    Example:
        >>> from vggunet import build_unet
        >>> from vggunet.models.precision import dtype_policy
        >>> with dtype_policy("mixed_bfloat16"):
        ...     m = build_unet(input_size=(32, 32, 1), n_filters=2, n_classes=2)
        >>> copy = float32_copy(m)
        >>> m.layers[1].compute_dtype, copy.layers[1].compute_dtype
        ('bfloat16', 'float32')
        >>> all((a == b).all() for a, b in zip(m.get_weights(), copy.get_weights()))
        True
    """
    import vggunet.models.layers  # noqa: F401  registers the custom layers for from_config

    clone = model.__class__.from_config(_float32_config(model.get_config()))
    # Mixed policies keep float32 variables already; a pure half-precision model is widened.
    clone.set_weights([np.asarray(w).astype(v.dtype)
                       for w, v in zip(model.get_weights(), clone.weights)])
    return clone


def _float32_config(node: Any) -> Any:
    """The config tree with every reduced-precision dtype policy replaced by float32."""
    if isinstance(node, list):
        return [_float32_config(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {}
    for key, value in node.items():
        if key == "dtype" and _policy_name(value) in _REDUCED_POLICIES:
            value = "float32"
        result[key] = _float32_config(value)
    return result


def _policy_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        return value.get("config", {}).get("name")
    return None


def _uses_reduced_precision(model: keras.Model) -> bool:
    return any(
        getattr(layer, "compute_dtype", "float32") in ("bfloat16", "float16")
        for layer in all_layers(model)
    )


def _pad_multiple(model: keras.Model) -> int | None:
    from vggunet.models.layers import PadToMultiple

    multiples = [layer.multiple for layer in all_layers(model) if isinstance(layer, PadToMultiple)]
    return max(multiples) if multiples else None


def _input_spec(model: keras.Model, fmt: str,
                input_size: Sequence[int] | None) -> tuple[int | None, ...]:
    """The exported input shape `(None, H, W, C)`; H and W free unless fixed."""
    if len(model.inputs) != 1:
        raise ExportError(f"only single-input models can be exported; {model.name!r} has "
                          f"{len(model.inputs)} inputs")
    shape = tuple(model.inputs[0].shape)
    if input_size is None:
        if fmt == "tflite" and len(shape) == 4 and None in shape[1:3]:
            raise ExportError(
                f"tflite export needs a fixed input size: model {model.name!r} takes any H×W "
                f"(input shape {shape[1:]}), and TFLite's built-in convolutions need static "
                f"shapes; pass input_size=(H, W) / --input-size HxW (savedmodel and onnx keep "
                f"H×W dynamic)"
            )
        return (None, *shape[1:])
    if isinstance(input_size, str) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in input_size):
        raise ExportError(f"input_size must be (H, W) of positive integers, e.g. (256, 256); "
                          f"got {input_size!r}")
    size = tuple(int(v) for v in input_size)
    if len(shape) != 4 or len(size) != 2 or min(size) <= 0:
        raise ExportError(f"input_size must be (H, W) of positive integers for a 2D image "
                          f"model; got {input_size!r} for input shape {shape[1:]}")
    for given, fixed, axis in zip(size, shape[1:3], ("height", "width")):
        if fixed is not None and given != fixed:
            raise ExportError(f"input_size {size[0]}x{size[1]} does not match the {axis} "
                              f"{fixed} model {model.name!r} was built for (input shape "
                              f"{shape[1:]})")
    multiple = _pad_multiple(model)
    if multiple and min(size) < multiple:
        raise ExportError(f"input_size {size[0]}x{size[1]} is too small: model {model.name!r} "
                          f"needs H and W >= {multiple}")
    return (None, *size, shape[3])


def _check_destination(out: Path, fmt: str) -> None:
    if fmt == "savedmodel":
        if out.exists() and not out.is_dir():
            raise ExportError(f"savedmodel export writes a folder, but {str(out)!r} is a file")
        if out.is_dir() and any(out.iterdir()) and not (out / "saved_model.pb").is_file():
            raise ExportError(f"refusing to replace {str(out)!r}: the folder is not empty and "
                              f"holds no SavedModel (saved_model.pb)")
        return
    expected = {"keras": ".keras", "tflite": ".tflite", "onnx": ".onnx"}[fmt]
    if out.suffix.lower() != expected:
        raise ExportError(f"{fmt} export must be written to a '{expected}' file, got "
                          f"{str(out)!r}")


def _write_saved_model(model: keras.Model, directory: Path, shape: tuple) -> None:
    import tensorflow as tf

    spec = tf.TensorSpec(shape, tf.float32, name=model.inputs[0].name)
    model.export(str(directory), format="tf_saved_model", input_signature=[spec], verbose=False)


def _tflite_bytes(model: keras.Model, shape: tuple, workdir: Path) -> bytes:
    import tensorflow as tf

    saved = workdir / "saved_model"
    _write_saved_model(model, saved, shape)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    # Built-in ops only: a file that needs the Flex (TF Select) delegate would not run in the
    # stock TFLite runtimes on phones and microcontrollers.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def _onnx_bytes(model: keras.Model, shape: tuple, workdir: Path, opset: int | None) -> bytes:
    try:
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"onnx export needs the tf2onnx package, which is not installed "
                          f"({exc}); install it with {ONNX_INSTALL_HINT}") from None
    import tensorflow as tf

    path = workdir / "model.onnx"
    spec = tf.TensorSpec(shape, tf.float32, name=model.inputs[0].name)

    def convert() -> None:
        with warnings.catch_warnings():
            # Keras's tf2onnx numpy-2 shim probes `np.object`, which warns on every export.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*np.object.*")
            model.export(str(path), format="onnx", input_signature=[spec], opset_version=opset,
                         verbose=False)

    # tf2onnx deep-copies the whole graph, weights included, before each of its ~36 optimizer
    # passes so it can roll a failing pass back; for a VGG16 U-Net that is two thirds of the
    # conversion time. Its switch is "the variable is set at all", so try without rollback
    # first and convert again with the default only if that fails.
    previous = os.environ.get(_TF2ONNX_CATCH_ERRORS)
    os.environ[_TF2ONNX_CATCH_ERRORS] = "FALSE"
    try:
        convert()
    except Exception:
        os.environ.pop(_TF2ONNX_CATCH_ERRORS)
        convert()
    finally:
        if previous is None:
            os.environ.pop(_TF2ONNX_CATCH_ERRORS, None)
        else:
            os.environ[_TF2ONNX_CATCH_ERRORS] = previous
    return _tidy_onnx(path.read_bytes(), output_name="output_0")


def _tidy_onnx(data: bytes, output_name: str) -> bytes:
    """Names the ONNX output and free dimensions like the SavedModel signature does.

    tf2onnx calls the output after the TF graph node (`Identity:0`) and free dimensions
    `unk__N`; serving code reads better with `output_0` and `batch`/`height`/`width`.
    """
    import onnx

    proto = onnx.load_from_string(data)
    graph = proto.graph
    if len(graph.output) == 1:
        old = graph.output[0].name
        for node in graph.node:
            node.output[:] = [output_name if name == old else name for name in node.output]
            node.input[:] = [output_name if name == old else name for name in node.input]
        graph.output[0].name = output_name
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            for dim, label in zip(dims, ("batch", "height", "width", "channels")):
                if not dim.HasField("dim_value"):
                    dim.dim_param = label
    return proto.SerializeToString()


def export_model(
    model_or_path: keras.Model | str | os.PathLike,
    out: str | os.PathLike,
    format: str | None = None,
    *,
    input_size: Sequence[int] | None = None,
    keep_precision: bool = False,
    keep_optimizer: bool = False,
    opset: int | None = None,
) -> Path:
    """Exports a model for inference as `.keras`, a TensorFlow SavedModel, TFLite or ONNX.

    Args:
        model_or_path: a Keras model, or the path of a `.keras` file (loaded in safe mode).
        out: the destination: a `.keras`, `.tflite` or `.onnx` file, or a folder for
            `savedmodel`. Parent folders are created; an older export there is replaced.
        format: one of `FORMATS`; default: from the suffix of `out` (`.keras`, `.tflite`,
            `.onnx`; a SavedModel folder must be named).
        input_size: `(H, W)` to fix the input size in the export. Required for `tflite` when the
            model takes any size; optional for `savedmodel`/`onnx` (default: H and W free);
            not allowed for `keras`.
        keep_precision: keep a mixed-precision compute policy in a SavedModel instead of
            rebuilding the model in float32. TFLite and ONNX are always float32.
        keep_optimizer: `keras` only: keep the compile configuration and optimizer state
            (loading from a path then restores them; a model passed in is saved as it is).
        opset: `onnx` only: the ONNX opset (default: tf2onnx's).

    Returns:
        The path written.

    Raises:
        ExportError: unknown format, a destination that does not fit it, a bad input size, or
            a converter that is missing or fails.
        MissingFileError: `model_or_path` names a file that does not exist (a
            `FileNotFoundError`).

    Example:
        >>> import tempfile, tensorflow as tf, vggunet
        >>> m = vggunet.build_vgg_unet("vgg16", num_classes=2, weights=None, precision="float32",
        ...                            decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8)
        >>> tmp = tempfile.mkdtemp()
        >>> path = export_model(m, f"{tmp}/serving", format="savedmodel")
        >>> serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        >>> serve(input_image=tf.zeros((1, 40, 70, 3)))["output_0"].shape  # any H×W >= 32
        TensorShape([1, 40, 70, 2])
        >>> export_model(m, f"{tmp}/m.tflite")
        Traceback (most recent call last):
        ...
        vggunet.errors.ExportError: tflite export needs a fixed input size: ...
    """
    fmt = _check_request(out, format, input_size, keep_precision, opset)
    out = Path(out)
    if isinstance(model_or_path, keras.Model):
        model = model_or_path
    elif not isinstance(model_or_path, (str, os.PathLike)):
        raise ExportError(f"model_or_path must be a Keras model or the path of a .keras file, "
                          f"got {type(model_or_path).__name__}")
    else:
        from vggunet.saving import load_model

        model = load_model(model_or_path, compile=fmt == "keras" and keep_optimizer)
    if len(model.input_shape) == 5:
        _check_volume_export(model, fmt, input_size)

    make_folder(out.parent, what="the folder of the export ", error=ExportError)
    if fmt == "keras":
        from vggunet.saving import save_model

        if not keep_optimizer and getattr(model, "optimizer", None) is not None:
            model = _same_precision_copy(model)
        return save_model(model, out)

    shape = _input_spec(model, fmt, input_size)
    if _uses_reduced_precision(model) and not keep_precision:
        model = float32_copy(model)
    return _convert(model, out, fmt, shape, opset)


def _check_volume_export(model: keras.Model, fmt: str, input_size: Any) -> None:
    """Refuses the exports of a volume model that cannot work, before any converter runs."""
    from vggunet.evaluate import output_data_format

    if input_size is not None:
        raise ExportError("input_size is (H, W) of 2D models; a volume model is exported with "
                          f"its own input shape {tuple(model.input_shape[1:])}")
    if fmt == "tflite":
        raise ExportError("tflite cannot run volume models: its runtime has no 3D pooling "
                          "kernel (MaxPool3D needs TF Select ops); export savedmodel or onnx")
    if fmt == "onnx" and output_data_format(model) == "channels_first":
        raise ExportError(
            "onnx export of a channels_first volume model fails in tf2onnx (TensorFlow runs "
            "its 3D convolutions on the CPU through nested functions); rebuild it with "
            "build_unet_3d(..., data_format='channels_last'), copy the weights with "
            "set_weights(model.get_weights()) (the kernels are the same) and export that")


def _check_request(out: str | os.PathLike, format: str | None,
                   input_size: Sequence[int] | None, keep_precision: bool,
                   opset: int | None) -> str:
    """The export format, after checking that the other arguments fit it."""
    fmt = infer_format(out) if format is None else str(format).lower()
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; valid formats: "
                          f"{', '.join(FORMATS)}")
    _check_destination(Path(out), fmt)
    if fmt == "keras" and input_size is not None:
        raise ExportError("input_size does not apply to keras export (a .keras file keeps the "
                          "model's own input shape); use savedmodel, tflite or onnx")
    if keep_precision and fmt in ("tflite", "onnx"):
        raise ExportError(f"keep_precision is not possible for {fmt}: its converter needs a "
                          f"float32 compute graph")
    if opset is not None and fmt != "onnx":
        raise ExportError(f"opset applies to onnx export only, not {fmt}")
    return fmt


def _convert(model: keras.Model, out: Path, fmt: str, shape: tuple,
             opset: int | None) -> Path:
    """Writes a SavedModel folder, or TFLite/ONNX bytes, atomically at `out`."""
    if fmt == "savedmodel":
        tmp = make_temp_dir(out)
        try:
            with _conversion_errors(fmt, model):
                _write_saved_model(model, tmp, shape)
            atomic_replace_dir(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out
    with tempfile.TemporaryDirectory(prefix="vggunet-export.") as work:
        with _conversion_errors(fmt, model):
            if fmt == "tflite":
                data = _tflite_bytes(model, shape, Path(work))
            else:
                data = _onnx_bytes(model, shape, Path(work), opset)
    return atomic_write(out, data)


@contextlib.contextmanager
def _conversion_errors(fmt: str, model: keras.Model) -> Iterator[None]:
    """Turns a converter's own exception types into one-line `ExportError`s (the CLI's exit 2)."""
    try:
        yield
    except ExportError:
        raise
    except Exception as exc:
        # MLIR/tf2onnx messages run to pages; the first few hundred characters name the op.
        first = " ".join(str(exc).split())[:300]
        raise ExportError(f"{fmt} conversion of {model.name!r} failed: "
                          f"{type(exc).__name__}: {first}") from exc


def _same_precision_copy(model: keras.Model) -> keras.Model:
    """The model without its compile state and optimizer, same policy and weights."""
    import vggunet.models.layers  # noqa: F401  registers the custom layers for from_config

    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone
