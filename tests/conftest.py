"""Shared fixtures: the real ISBI data, small models, and a quiet TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO.parent / "shared" / "data" / "isbi2012"


@pytest.fixture(scope="session")
def isbi_dir() -> Path:
    """The ISBI 2012 training set shipped beside the repository (image/ and label/)."""
    if not (ISBI / "image").is_dir():
        pytest.skip(f"ISBI data not found at {ISBI}")
    return ISBI


@pytest.fixture(scope="session")
def vgg_unet():
    """A VGG16 U-Net for any input size, 3 classes, random encoder, float32."""
    from vggunet import build_vgg_unet

    return build_vgg_unet("vgg16", num_classes=3, weights=None, precision="float32")


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def random_images(rng: np.random.Generator, batch: int, height: int, width: int,
                  channels: int = 3) -> np.ndarray:
    """Raw-pixel float32 images in [0, 255]."""
    return (rng.random((batch, height, width, channels)) * 255).astype("float32")


SHALLOW_FLAGS = ("--skip-layers", "block1_conv2,block2_conv2", "--bottleneck-source",
                 "block2_pool", "--decoder-filters", "8,8", "--bottleneck-filters", "16")
"""The CLI's model flags for `shallow_unet()`'s architecture (its seed aside)."""

ONE_BLOCK_FLAGS = ("--skip-layers", "block1_conv2", "--bottleneck-source", "block1_pool",
                   "--decoder-filters", "8", "--bottleneck-filters", "16")
"""The CLI's model flags for `shallow_unet(blocks=1)`'s architecture (its seed aside)."""


def shallow_unet(blocks: int = 2, filters: int = 8, **options):
    """VGG16's first `blocks` blocks (1-3) under a `blocks`-stage decoder, float32, seeded.

    A training step of the 2-block model traces in about a third of the full VGG16 U-Net's
    time and its checkpoint saves in an eighth, which is what keeps the training tests fast.

    Args:
        blocks: encoder blocks kept; each taps its last conv as a skip.
        filters: channels of every decoder stage.
        **options: more `build_vgg_unet` keywords (e.g. `decoder_batchnorm=True`).
    """
    import keras

    from vggunet import build_vgg_unet

    keras.utils.set_random_seed(0)
    taps = ["block1_conv2", "block2_conv2", "block3_conv3"][:blocks]
    return build_vgg_unet("vgg16", input_shape=(None, None, 3), num_classes=2, weights=None,
                          skip_layers=taps, bottleneck_source=f"block{blocks}_pool",
                          decoder_filters=(filters,) * blocks, bottleneck_filters=16,
                          precision="float32", **options)


def one_block_unet(**options):
    """`shallow_unet(blocks=1)`: VGG16's first block under one decoder stage. For tests whose
    subject (run folders, resume, checkpoints, errors) does not depend on the encoder's depth:
    its training step traces in about 60% of the two-block model's time.

    Args:
        **options: more `build_vgg_unet` keywords.
    """
    return shallow_unet(blocks=1, **options)


def producer(model, tensor) -> str:
    """Name of the layer of `model` whose output is `tensor` (public API: `layer.output`)."""
    for layer in model.layers:
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        if any(out is tensor for out in outputs):
            return layer.name
    raise AssertionError(f"no layer of {model.name!r} outputs {tensor}")


def input_sources(model, layer_name: str) -> list[str]:
    """Names of the layers feeding `layer_name`, in input order (public API: `layer.input`)."""
    inputs = model.get_layer(layer_name).input
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    return [producer(model, tensor) for tensor in inputs]


def forward(model, x):
    """`model(x)` in inference mode, run eagerly, as NumPy arrays (a list for several outputs).

    `model.predict` traces a predict function for each new input shape: 10-20 s for a deep
    backbone on the 2-core CI machine, where an eager call takes 2-3 s. Tests that only check
    outputs (shapes, sums, equality after a reload) call this instead.
    """
    import keras

    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))


# The test files that take longest in all (one worker's seconds summed over a file, from
# `pytest --durations=0`, 2026-12-02), heaviest first. `make test` runs whole files on 2
# workers (`--dist loadfile --no-loadscope-reorder`) in collection order. xdist's own order
# (most tests first) left these few-test, long files for the end, where one worker ran them
# alone for minutes. This list only orders files: a stale or missing entry changes the suite's
# time, never a result (tests/test_suite.py checks that each entry is a test file).
HEAVIEST_FILES_FIRST = (
    "test_backbones.py", "test_notebooks.py", "test_training.py", "test_backbone_workflow.py",
    "test_run_folder.py", "test_faults.py", "test_cli.py", "test_demo.py", "test_unet.py",
    "test_distribute.py", "test_volume_cli.py", "test_bad_input.py", "test_freezing.py",
    "test_weights.py", "test_volume_workflow.py", "test_hub.py", "test_channels.py",
    "test_fuzz.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    """Heaviest files first (a stable sort: each file's tests keep their order)."""
    rank = {name: i for i, name in enumerate(HEAVIEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
