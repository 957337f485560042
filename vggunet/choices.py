"""The option lists that the API and the CLI share, in one keras-free module.

Each tuple is the one source of the valid values of an argument: the modules that implement the
options import it from here, and so does the CLI, which must not import Keras to build its
parser (`vggunet --help` stays instant).
"""

from __future__ import annotations

from types import MappingProxyType

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
"""`precision=` of the builders (`vggunet.models.precision`), `--precision`."""

DECODERS = ("upsampling", "transpose")
"""`decoder=` of `build_vgg_unet` (`vggunet.models.blocks.decoder_stage`), `--decoder`."""

EXPORT_FORMATS = ("keras", "savedmodel", "tflite", "onnx")
"""`format=` of `export_model`, `vggunet export --format`."""

MASK_FORMATS = ("index", "binary", "palette", "channel")
"""How masks encode classes (`vggunet.data.masks`), `--mask-format`."""

SAMPLE_WEIGHTS = ("median_frequency", "inverse_frequency", "inverse_sqrt_frequency", "border")
"""Per-pixel loss weights of `make_dataset(sample_weights=...)`, `--sample-weights`."""

LOSS_NAMES = ("ce", "crossentropy", "dice", "jaccard", "focal", "ce+dice", "lovasz", "ohem")
"""Loss names of `get_loss` (`vggunet.losses.factory`), `--loss`."""

METRIC_NAMES = ("miou", "iou", "dice", "accuracy")
"""Metric names of `get_metrics` (`vggunet.metrics.factory`), `--metrics`."""

UNET3D_PRESETS = MappingProxyType({
    "lecture": MappingProxyType({"depth": 2, "base_filters": 32}),
    "assignment": MappingProxyType({"depth": 4, "base_filters": 32}),
})
"""`preset=` of `build_unet_3d` (read-only): the AI-for-Medicine lab's two 3D U-Nets. "lecture"
(depth 2) is the course's walk-through model and the builder's default; "assignment" (depth 4)
is `unet_model_3d` as the brain-tumour assignment builds it. Both use 32 base filters."""
