"""Run by tests/test_backends.py, once per Keras backend, each in a fresh process.

KERAS_BACKEND must be set before Keras is imported, so every backend needs its own process.
For each builder: build, forward pass, freeze the encoder and read the layer table, compile
with vggunet losses and metrics, one train_on_batch step, save with vggunet.save_model and
reload with vggunet.load_model (safe mode), compare outputs; and that the distribution helpers
of the other engines refuse with a clear message. Mode `data_parallel` (JAX): the
keras.distribution DataParallel helper over 2 CPU devices, in a process of its own because the
device count is fixed when JAX starts. Prints one line `RESULT {json}` that the test checks.

Usage: KERAS_BACKEND=jax python tests/_backend_smoke.py {builders,data_parallel} WORK_DIR
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
MODE = sys.argv[1] if len(sys.argv) > 1 else "builders"
if BACKEND == "jax" and MODE == "data_parallel":
    # Two host devices for DataParallel; XLA reads the flag once, when JAX starts.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=2").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import vggunet  # noqa: E402,F401  the whole package must import on every backend
from vggunet import (  # noqa: E402
    build_unet,
    build_unet_3d,
    build_vgg_unet,
    format_layers,
    freeze,
    layer_table,
    load_model,
    save_model,
)
from vggunet.losses import get_loss  # noqa: E402
from vggunet.metrics import get_metrics  # noqa: E402
from vggunet.precision import cpu_has_bfloat16, resolve_precision  # noqa: E402
from vggunet.training import compile_model  # noqa: E402

RNG = np.random.default_rng(0)


def _numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def _exercise(model: keras.Model, x: np.ndarray, y: np.ndarray, work: str, compile_fn) -> dict:
    """Forward, freeze + table, compile, one step, save + reload; returns what happened."""
    out: dict = {}
    start = time.perf_counter()
    pred = _numpy(model(x))
    out["output_shape"] = list(pred.shape)
    out["output_dtype"] = str(pred.dtype)
    out["output_finite"] = bool(np.isfinite(pred).all())

    report = freeze(model, "encoder")
    rows = layer_table(model)
    out["frozen_layers"] = report.frozen_layers
    out["table_rows"] = len(rows)
    out["model_layers"] = len(model.layers)
    out["roles"] = sorted({r.role for r in rows})
    out["table_has_totals"] = "Params:" in format_layers(model)

    compile_fn(model)
    trainable_before = [_numpy(w).copy() for w in model.trainable_weights]
    frozen_before = [_numpy(w).copy() for w in model.non_trainable_weights]
    logs = model.train_on_batch(x, y, return_dict=True)
    out["logs"] = {k: float(v) for k, v in logs.items()}
    out["loss_finite"] = math.isfinite(float(logs["loss"]))
    out["trainable_changed"] = any(
        not np.array_equal(a, _numpy(w)) for a, w in zip(trainable_before, model.trainable_weights)
    )
    out["frozen_unchanged"] = all(
        np.array_equal(a, _numpy(w)) for a, w in zip(frozen_before, model.non_trainable_weights)
    )

    path = os.path.join(work, f"{model.name}_{BACKEND}.keras")
    save_model(model, path)
    loaded = load_model(path)  # safe mode, compiled
    expected = _numpy(model.predict(x, verbose=0))
    got = _numpy(loaded.predict(x, verbose=0))
    out["reload_max_abs_diff"] = float(np.max(np.abs(expected - got)))
    out["reload_compiled"] = bool(loaded.compiled)
    out["reload_trainable_same"] = [l.trainable for l in loaded.layers] == [
        l.trainable for l in model.layers
    ]
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def vgg_unet(work: str) -> dict:
    # precision="auto" on purpose: each backend resolves it its own way.
    model = build_vgg_unet("vgg16", input_shape=(None, None, 3), num_classes=3, weights=None,
                           decoder_filters=(16, 16, 8, 8, 8), bottleneck_filters=16,
                           precision="auto")
    x = (RNG.random((2, 64, 64, 3)) * 255).astype("float32")
    y = RNG.integers(0, 3, (2, 64, 64)).astype("int32")
    odd = _numpy(model(np.zeros((1, 40, 56, 3), "float32")))
    result = _exercise(model, x, y, work, lambda m: compile_model(
        m, loss="ce+dice", metrics=("miou", "dice", "accuracy")))
    result["odd_size_output_shape"] = list(odd.shape)
    result["softmax_sums_to_one"] = bool(np.allclose(odd.sum(-1), 1.0, atol=1e-3))
    result["compute_dtype"] = model.get_layer("bottleneck_conv1").compute_dtype
    return result


def lab_unet(work: str) -> dict:
    reference = build_unet().count_params()
    model = build_unet((32, 32, 3), n_filters=4, n_classes=3)
    x = (RNG.random((2, 32, 32, 3)) * 255).astype("float32")
    y = RNG.integers(0, 3, (2, 32, 32)).astype("int32")
    result = _exercise(model, x, y, work, lambda m: compile_model(
        m, loss="focal", metrics=("miou", "accuracy")))
    result["reference_params"] = reference
    return result


def unet_3d(work: str) -> dict:
    reference = build_unet_3d().count_params()
    first = build_unet_3d((2, 8, 8, 8), base_filters=4, n_classes=3)
    first_shape = list(_numpy(first(RNG.random((1, 2, 8, 8, 8)).astype("float32"))).shape)
    model = build_unet_3d((8, 8, 8, 1), base_filters=4, n_classes=2,
                          data_format="channels_last", final_activation="softmax")
    x = RNG.random((2, 8, 8, 8, 1)).astype("float32")
    y = RNG.integers(0, 2, (2, 8, 8, 8)).astype("int32")

    def compile_3d(m: keras.Model) -> None:
        m.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=get_loss("dice", num_classes=2),
                  metrics=get_metrics(["miou", "dice"], 2))

    result = _exercise(model, x, y, work, compile_3d)
    result["reference_params"] = reference
    result["channels_first_output_shape"] = first_shape
    return result


def refusals() -> dict:
    """The other engines' distribution helpers refuse this backend with a clear message."""
    from vggunet.distribute import data_parallel, resolve_strategy

    out: dict = {}
    if BACKEND != "tensorflow":
        try:
            resolve_strategy("mirrored")
            out["tf_strategy_error"] = None
        except ValueError as exc:
            out["tf_strategy_error"] = str(exc)
    if BACKEND != "jax":
        try:
            data_parallel()
            out["data_parallel_error"] = None
        except ValueError as exc:
            out["data_parallel_error"] = str(exc)
    return out


def data_parallel_run() -> dict:
    """JAX: one SGD step under DataParallel over 2 CPU devices equals the one-device step."""
    from vggunet.distribute import data_parallel

    out: dict = {}
    x = RNG.random((4, 8, 8, 8, 1)).astype("float32")
    y = RNG.integers(0, 2, (4, 8, 8, 8)).astype("int32")

    def make() -> keras.Model:
        # The 3D U-Net has no Dropout, so both runs compute the same function.
        return build_unet_3d((8, 8, 8, 1), base_filters=4, n_classes=2,
                             data_format="channels_last", final_activation="softmax")

    def compile_plain(m: keras.Model) -> None:
        # SGD and plain CE keep the two runs comparable step for step.
        compile_model(m, loss="ce", metrics=("accuracy",), optimizer="sgd", learning_rate=0.5)

    keras.utils.set_random_seed(0)
    single = make()
    initial = single.get_weights()
    compile_plain(single)
    single_loss = float(single.train_on_batch(x, y, return_dict=True)["loss"])
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), initial))

    dist = data_parallel()
    try:
        model = make()
        model.set_weights(initial)
        compile_plain(model)
        kernel = model.get_layer("head_conv").kernel.value
        out["devices"] = [str(d) for d in dist.device_mesh.devices.flatten()]
        out["kernel_devices"] = len(kernel.sharding.device_set)
        out["batch_layout"] = list(dist.get_data_layout(x.shape).axes)
        dist_loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
        diff = max(float(np.max(np.abs(a - b)))
                   for a, b in zip(single.get_weights(), model.get_weights()))
    finally:
        keras.distribution.set_distribution(None)
    out["weights_moved"] = moved
    out["single_loss"] = single_loss
    out["data_parallel_loss"] = dist_loss
    out["weights_max_abs_diff"] = diff
    return out


def main(mode: str, work: str) -> None:
    start = time.perf_counter()
    result: dict = {"backend": keras.backend.backend(), "mode": mode}
    if mode == "builders":
        result.update({
            "auto_precision": resolve_precision("auto"),
            "cpu_bf16": cpu_has_bfloat16(),
            "vgg_unet": vgg_unet(work),
            "unet": lab_unet(work),
            "unet_3d": unet_3d(work),
            "refusals": refusals(),
        })
    elif mode == "data_parallel":
        result["data_parallel"] = data_parallel_run()
    else:
        raise SystemExit(f"unknown mode {mode!r}; expected builders or data_parallel")
    result["seconds"] = round(time.perf_counter() - start, 1)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
