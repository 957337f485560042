"""Training the lab's 3D U-Net through `train`/`finetune`: compile settings for volumes, the
volume loss and metrics by name, per-class metrics in log.csv and TensorBoard."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tensorflow as tf

from vggunet.losses import SoftDiceLoss, get_loss
from vggunet.metrics import get_metrics
from vggunet.models.unet3d import build_unet_3d
from vggunet.training import train
from vggunet.training.callbacks import split_class_vectors
from vggunet.training.compiling import compile_model
from vggunet.training.settings import (
    VOLUME_COMPILE, VOLUME_MONITOR, VolumeDataSettings,
)
from vggunet.errors import ArgumentError


def _tiny(data_format: str):
    shape = (2, 8, 8, 4) if data_format == "channels_first" else (8, 8, 4, 2)
    return build_unet_3d(shape, depth=2, base_filters=2, n_classes=3, data_format=data_format)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_compile_model_reads_the_volume_model_data_format(data_format):
    model = compile_model(_tiny(data_format), loss="soft_dice",
                          metrics=["dice_coefficient", "class_dice", "sensitivity",
                                   "specificity"])
    assert isinstance(model.loss, SoftDiceLoss)
    assert model.loss.data_format == data_format
    # Perfect predictions of a one-hot target in the model's layout score 1 for every class.
    x = np.zeros((1, *model.input_shape[1:]), "float32")
    probs = model.predict(x, verbose=0)
    target = (probs > 0.5).astype("float32")
    scores = model.evaluate(x, target, verbose=0, return_dict=True)
    assert scores["dice_coefficient"] == pytest.approx(1.0)
    # (2I + 1) / (P + T + 1) = 1 for each class, present or not.
    assert np.allclose(scores["per_class_dice"], [1, 1, 1])


def test_volume_names_of_the_factories():
    loss = get_loss("soft_dice", num_classes=3, ignore_index=None, data_format="channels_first")
    assert isinstance(loss, SoftDiceLoss) and loss.data_format == "channels_first"
    # data_format is accepted and dropped for the 2D losses, so callers may always pass it.
    assert type(get_loss("ce", data_format="channels_first")).__name__ == \
        "SparseCategoricalCrossentropy"
    names = [m.name for m in get_metrics("dice_coefficient,class_dice,sensitivity,specificity",
                                         3, data_format="channels_last")]
    assert names == ["dice_coefficient", "per_class_dice", "per_class_sensitivity",
                     "per_class_specificity"]


def test_split_class_vectors():
    logs = {"loss": 0.5, "iou": np.array([0.1, 0.2], "float32"), "phase": 1}
    split_class_vectors(logs)
    assert logs == pytest.approx({"loss": 0.5, "iou_0": 0.1, "iou_1": 0.2, "phase": 1})


def test_volume_data_settings_checks_and_defaults():
    settings = VolumeDataSettings()
    assert settings.patch == (160, 160, 16) and settings.background_fraction == 0.95
    assert settings.label_mode == "multilabel" and settings.standardize == "lab"
    # "auto" is stored resolved, so state.json names the format the run used.
    assert settings.data_format == "channels_last"
    assert VolumeDataSettings(data_format="channels_first").data_format == "channels_first"
    with pytest.raises(ArgumentError, match="patch must have 3 sizes"):
        VolumeDataSettings(patch=(64, 64))
    with pytest.raises(ArgumentError, match="standardize"):
        VolumeDataSettings(standardize="minmax")
    assert VOLUME_COMPILE.loss == "soft_dice" and VOLUME_MONITOR == "val_dice_coefficient"


def test_train_a_channels_first_volume_model_logs_per_class_columns(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 2, 8, 8, 4)).astype("float32")
    y = (rng.random((4, 3, 8, 8, 4)) > 0.6).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    result = train(_tiny("channels_first"), data, data, out_dir=tmp_path, epochs=1, verbose=0,
                   loss=VOLUME_COMPILE.loss, metrics=VOLUME_COMPILE.metrics,
                   monitor=VOLUME_MONITOR, data_settings=VolumeDataSettings(patch=(8, 8, 4)))
    assert result.monitor == "val_dice_coefficient" and result.epochs_completed == 1
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert {f"val_per_class_dice_{i}" for i in range(3)} <= set(rows[0])
    assert all(0.0 <= float(rows[-1][f"per_class_dice_{i}"]) <= 1.0 for i in range(3))
    # TensorBoard got scalars for every class (it refuses vectors).
    assert any((tmp_path / "tensorboard" / "validation").iterdir())
