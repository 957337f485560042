"""layer_table / print_layers and roles."""

from __future__ import annotations

import io
import re

import keras

import vggunet as vu


def test_layer_table_rows_and_roles(vgg_unet):
    rows = vu.layer_table(vgg_unet)
    assert [r.index for r in rows] == list(range(len(vgg_unet.layers)))
    assert [r.name for r in rows] == [l.name for l in vgg_unet.layers]
    by_name = {r.name: r for r in rows}
    assert by_name["input_image"].role == "input"
    assert by_name["block1_conv1"].role == "encoder"
    assert [r.name for r in rows if r.role == "skip"] == [f"block{i}_conv2" for i in range(1, 6)]
    assert by_name["bottleneck_conv2"].role == "bottleneck"
    assert by_name["decoder_stage3_concat"].role == "decoder"
    assert by_name["head_activation"].role == "head"
    assert by_name["block1_conv1"].params == 1792
    assert by_name["block1_conv1"].output_shape == "(None, None, None, 64)"
    assert sum(r.params for r in rows) == vgg_unet.count_params()
    assert {r.role for r in rows} == set(vu.inspect.ROLES)


def test_print_layers_contains_every_row_and_totals():
    model = vu.build_vgg_unet(input_shape=(64, 64, 3), weights=None, freeze="encoder")
    buffer = io.StringIO()
    vu.print_layers(model, file=buffer)
    text = buffer.getvalue()
    lines = text.splitlines()
    for i, layer in enumerate(model.layers):
        row = next(line for line in lines if f" {layer.name} " in f" {line} ")
        assert row.split()[0] == str(i)
        assert ("no" if not layer.trainable else "yes") in row.split()
        assert str(tuple(layer.output.shape)) in row
    assert "14,714,688 frozen" in lines[-1]
    assert f"{model.count_params():,} total" in lines[-1]


def test_roles_of_reference_unets():
    roles = vu.layer_roles(vu.build_unet(input_size=(32, 32, 3), n_filters=4))
    assert roles["encoder_block1_conv2"] == "skip"
    assert roles["encoder_block4_dropout"] == "skip"
    assert roles["bottleneck_conv1"] == "bottleneck"
    assert roles["head_conv"] == "head"
    roles3 = vu.layer_roles(vu.build_unet_3d(input_shape=(1, 8, 8, 8), base_filters=2))
    assert roles3["encoder_level0_conv2_relu"] == "skip"
    assert roles3["decoder_level0_up"] == "decoder"


def test_role_filter():
    model = vu.build_vgg_unet(input_shape=(64, 64, 3), weights=None)
    text = vu.format_layers(model, roles=("skip",))
    body = text.splitlines()[3:-1]
    assert len(body) == 5 and all("skip" in line for line in body)


def test_layer_table_shows_the_backbones_own_numbering(vgg_unet):
    seed = keras.applications.VGG16(include_top=False, weights=None)
    rows = vu.layer_table(vgg_unet)
    numbered = {r.name: r.backbone_index for r in rows if r.backbone_index is not None}
    assert numbered["input_image"] == 0
    # Entry i is the layer that VGG16(include_top=False).layers[i] is (block5_pool is cut off).
    assert {i: name for name, i in numbered.items() if i} == {
        i: layer.name for i, layer in enumerate(seed.layers) if 0 < i < 18}
    by_name = {r.name: r for r in rows}
    assert by_name["input_preprocess"].backbone_index is None
    assert by_name["bottleneck_conv1"].backbone_index is None
    assert by_name["head_conv"].backbone_index is None
    text = vu.format_layers(vgg_unet)
    assert "backbone #" in text.splitlines()[1]
    assert re.search(r"\bblock3_conv3\s+9\s+Conv2D\b", text)
    assert re.search(r"\binput_preprocess\s+BackbonePreprocess\b", text)


def test_layer_row_without_backbone_index_still_builds():
    row = vu.LayerRow(0, "x", "Dense", True, "(None, 1)", 2, "head")
    assert row.backbone_index is None
