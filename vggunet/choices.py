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

LOSS_NAMES = ("ce", "crossentropy", "dice", "jaccard", "focal", "ce+dice", "lovasz", "ohem",
              "soft_dice")
"""Loss names of `get_loss` (`vggunet.losses.factory`), `--loss`."""

METRIC_NAMES = ("miou", "iou", "dice", "accuracy", "dice_coefficient", "class_dice", "sensitivity",
                "specificity")
"""Metric names of `get_metrics` (`vggunet.metrics.factory`), `--metrics`. The last four are
the brain-tumour lab's, for sigmoid multi-label outputs (one-hot targets, no class index)."""

VOLUME_LAYOUTS = ("auto", "decathlon", "brats", "folders", "h5")
"""Folder layouts of volume data (`find_volume_cases(layout=...)`), `--layout`."""

BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")
"""The BraTS per-case file suffixes, in channel order (`modalities=`, `--modalities`)."""

STANDARDIZE_METHODS = ("lab", "zscore", "none")
"""Intensity standardisation of volumes (`standardize_volume`): the lab's per channel and
z-slice, per channel over the volume, or none (`--standardize`)."""

LABEL_MODES = ("multilabel", "index")
"""How volume labels reach the loss: one-hot sigmoid channels (the lab's) or class indices
(softmax), `label_mode=`, `--label-mode`."""

BLEND_MODES = ("gaussian", "linear", "constant")
"""How `predict_volume` weights overlapping patches (`blend=`, `--blend`)."""

DATA_FORMATS = ("channels_first", "channels_last")
"""Where a volume model keeps its channels (`data_format=` of `build_unet_3d`)."""

DATA_FORMAT_OPTIONS = ("auto", *DATA_FORMATS)
"""`VolumeDataSettings.data_format` and `--data-format`: "auto" is the faster one (see
`training.settings.resolve_volume_data_format`)."""

UNET3D_PRESETS = MappingProxyType({
    "lecture": MappingProxyType({"depth": 2, "base_filters": 32}),
    "assignment": MappingProxyType({"depth": 4, "base_filters": 32}),
})
"""`preset=` of `build_unet_3d` (read-only): the AI-for-Medicine lab's two 3D U-Nets. "lecture"
(depth 2) is the course's walk-through model and the builder's default; "assignment" (depth 4)
is `unet_model_3d` as the brain-tumour assignment builds it. Both use 32 base filters."""
