"""Run by tests/test_distribute.py in a fresh process: MirroredStrategy on 2 logical CPUs.

The logical devices must be configured before TensorFlow initialises, hence a process of its
own. Trains the same small U-Net from the same weights on the same global batches once on one
device and once mirrored over two, and prints one JSON line with what the test compares.

Usage: python tests/_distribute_mirrored.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from vggunet import build_vgg_unet  # noqa: E402
from vggunet.distribute import num_replicas, strategy_name  # noqa: E402
from vggunet.training import finetune, train  # noqa: E402

GLOBAL_BATCH = 4
STEPS = 2


class BatchLosses(keras.callbacks.Callback):
    """Keeps the running loss Keras reports after each training step."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def build() -> keras.Model:
    # VGG16's first two blocks at 32x32: each strategy's train step traces in a few seconds.
    return build_vgg_unet("vgg16", input_shape=(32, 32, 3), num_classes=2, weights=None,
                          skip_layers=["block1_conv2", "block2_conv2"],
                          bottleneck_source="block2_pool", decoder_filters=(8, 8),
                          bottleneck_filters=8, precision="float32")


def main(out: str) -> None:
    rng = np.random.default_rng(0)
    images = (rng.random((GLOBAL_BATCH * STEPS, 32, 32, 3)) * 255).astype("float32")
    masks = (rng.random((GLOBAL_BATCH * STEPS, 32, 32)) > 0.5).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((images, masks)).batch(GLOBAL_BATCH)

    keras.utils.set_random_seed(0)
    initial = build().get_weights()

    def model_fn() -> keras.Model:
        model = build()
        model.set_weights(initial)
        return model

    runs = {}
    for label, strategy in (("single", None), ("mirrored", "mirrored")):
        batches = BatchLosses()
        result = train(model_fn, dataset, out_dir=os.path.join(out, label), epochs=1,
                       learning_rate=0.05, loss="ce", metrics=("accuracy",), optimizer="sgd",
                       monitor="loss", tensorboard=False, verbose=0, callbacks=[batches],
                       strategy=strategy)
        bound = result.model.distribute_strategy
        runs[label] = {
            "batch_losses": batches.losses,
            "epoch_loss": result.history["loss"],
            "weights": result.model.get_weights(),
            "replicas": int(bound.num_replicas_in_sync),
            "strategy": strategy_name(bound if strategy else None),
            "last_checkpoint": result.last_checkpoint,
        }

    # A model built outside the scope is rebuilt inside it and gets the trained weights back.
    given = model_fn()
    tuned = finetune(given, dataset, out_dir=os.path.join(out, "finetune"), phase1_epochs=1,
                     phase2_epochs=1, unfreeze="top1", loss="ce", metrics=("accuracy",),
                     monitor="loss", tensorboard=False, verbose=0, strategy="mirrored")
    copied_back = all(np.array_equal(a, b)
                      for a, b in zip(given.get_weights(), tuned.model.get_weights()))
    changed = any(not np.array_equal(a, b) for a, b in zip(given.get_weights(), initial))

    single, mirrored = runs["single"], runs["mirrored"]
    weight_diff = max(float(np.max(np.abs(a - b)))
                      for a, b in zip(single["weights"], mirrored["weights"]))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(single["weights"], initial))
    print("RESULT " + json.dumps({
        "single": {k: v for k, v in single.items() if k != "weights"},
        "mirrored": {k: v for k, v in mirrored.items() if k != "weights"},
        "weight_diff": weight_diff,
        "weights_moved": moved,
        "finetune": {"replicas": num_replicas(tuned.model.distribute_strategy),
                     "epochs": tuned.epochs_completed, "copied_back": copied_back,
                     "changed": changed, "last_checkpoint": tuned.last_checkpoint},
    }))


if __name__ == "__main__":
    main(sys.argv[1])
