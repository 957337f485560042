"""The user's job with backbones other than VGG16, end to end: CLI fine-tuning, inspection, export,
mixed precision.

`test_backbones.py` checks every registry entry's model; this file runs the commands and
conversions around a model on representative families: EfficientNetB0 (in-model Normalization,
nested BatchNorm) through `vggunet finetune --unfreeze top1` on ISBI tiles, `vggunet inspect` in
the backbone's own numbering, SavedModel export of a valid-padding (Xception) and a LayerNorm
(ConvNeXt) U-Net served by TensorFlow, and ConvNeXt/MobileNetV3 U-Nets under `mixed_bfloat16`.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import vggunet as vu
from conftest import forward
from test_cli import tiny_isbi  # noqa: F401  (fixture)

TINY = dict(num_classes=2, weights=None, decoder_filters=(8,) * 5, bottleneck_filters=8)


def test_cli_finetunes_an_efficientnet_top_stage(tiny_isbi, tmp_path, capsys):  # noqa: F811
    """Phase 1 (frozen encoder) and validation are skipped, and the command runs in this
    process, to keep the test short: test_cli runs both phases as subprocesses."""
    from vggunet.cli.app import main

    out = tmp_path / "ft"
    code = main(["finetune", "--data", str(tiny_isbi), "--mask-format", "binary",
                 "--weights", "none", "--decoder-filters", "8,8,8,8,8", "--bottleneck-filters",
                 "8", "--precision", "float32", "--backbone", "EfficientNet-B0",
                 "--phase1-epochs", "0",
                 "--phase2-epochs", "1", "--unfreeze", "top1", "--batch-size", "2",
                 "--steps-per-epoch", "1", "--seed", "0", "--out", str(out), "--quiet",
                 "--no-tensorboard"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "epochs completed: 1" in stdout
    model = vu.load_model(out / "checkpoints" / "last.keras", compile=False)
    assert model.name == "efficientnetb0_unet"
    # Phase 2 unfroze the last stage (block7a + the top conv); BatchNorm there stays frozen.
    in_top = vu.top_blocks(model, 1)
    last_stage = {layer.name for layer in model.layers if in_top(layer)}
    assert {"block7a_expand_conv", "top_conv"} <= last_stage
    encoder = [layer for layer in model.layers if layer.weights
               and model.roles.get(layer.name) in ("encoder", "skip")]
    assert len(encoder) > 100
    for layer in encoder:
        want = layer.name in last_stage and not isinstance(layer,
                                                            keras.layers.BatchNormalization)
        assert layer.trainable == want, layer.name
    assert json.loads((out / "state.json").read_text())["completed_epochs"] == 1


def test_cli_inspect_counts_in_the_backbones_numbering(capsys):
    from vggunet.cli.app import main

    assert main(["inspect", "--backbone", "resnet50", "--weights", "none", "--input-size",
                 "64x64", "--freeze", "encoder[:7]"]) == 0
    out = capsys.readouterr().out
    # ResNet50(include_top=False).layers[:7] = input … pool1_pool (backbone # 0-6): frozen.
    rows = {line.split()[1]: line.split() for line in out.splitlines()
            if line.split()[:1] and line.split()[0].isdigit()}
    for name, number, trainable in (("conv1_conv", "2", "no"), ("pool1_pool", "6", "no"),
                                    ("conv2_block1_1_conv", "7", "yes")):
        assert rows[name][2] == number and rows[name][4] == trainable, rows[name]
    assert "7 layer(s) changed" in out


@pytest.mark.parametrize("backbone, size", [("xception", (75, 90)), ("convnext_tiny", (64, 96))])
def test_savedmodel_of_other_families_serves_like_keras(backbone, size, tmp_path):
    import tensorflow as tf

    from vggunet.export import export_model

    model = vu.build_vgg_unet(backbone, precision="float32", **TINY)
    out = export_model(model, tmp_path / "serving", format="savedmodel")
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    x = (np.random.default_rng(1).random((1, *size, 3)) * 255).astype("float32")
    got = serve(input_image=tf.constant(x))["output_0"].numpy()
    assert got.shape == (1, *size, 2)
    # Eager: `model.predict` would trace a second graph of the deep backbone for nothing.
    np.testing.assert_allclose(got, forward(model, x), atol=1e-4)


@pytest.mark.parametrize("backbone", ["convnexttiny", "mobilenetv3small"])
def test_mixed_bfloat16_unet_outputs_float32_probabilities(backbone):
    model = vu.build_vgg_unet(backbone, precision="mixed_bfloat16", **TINY)
    assert model.get_layer("head_conv").compute_dtype == "bfloat16"
    x = (np.random.default_rng(2).random((1, 64, 64, 3)) * 255).astype("float32")
    y = forward(model, x)
    assert y.dtype == np.float32 and y.shape == (1, 64, 64, 2)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-3)
