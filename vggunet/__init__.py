"""vggunet: Keras 3 U-Nets for semantic segmentation by transfer learning.

The public API is loaded lazily (PEP 562): `import vggunet` imports neither Keras nor
TensorFlow; the first use of a name (`vggunet.build_vgg_unet`, `from vggunet import train`)
imports the module that defines it. `docs/ARCHITECTURE.md` maps the package.

Importing vggunet has one effect beyond defining names: vggunet's custom layers, losses and
metrics are registered with Keras as soon as Keras is imported (at once if it already is), so
that `keras.saving.load_model(path)` reads vggunet's `.keras` files without `custom_objects`,
as it did when this package imported everything eagerly.
"""

from __future__ import annotations

from vggunet import _serializables, errors
from vggunet._lazy import lazy_namespace

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(errors.__all__, "vggunet.errors"),
    **dict.fromkeys(
        ("BackbonePreprocess", "CropToReference", "ENCODERS", "EncoderSpec", "PadToMultiple",
         "build_encoder", "build_encoder_unet", "build_unet", "build_unet_3d", "build_vgg_unet",
         "conv_block", "decoder_stage", "get_encoder_spec", "load_backbone_weights",
         "Encoder", "SegmentationModel", "CropOrPadToReference",
         "resolve_precision", "upsampling_block"),
        "vggunet.models"),
    **dict.fromkeys(
        ("FreezeReport", "LayerRow", "encoder_blocks", "format_layers", "freeze", "layer_roles",
         "layer_table", "print_layers", "recompile", "select_layers", "top_blocks", "unfreeze"),
        "vggunet.transfer"),
    **dict.fromkeys(("find_volume_cases", "load_case", "make_dataset", "make_volume_dataset"),
                    "vggunet.data"),
    **dict.fromkeys(
        ("BatchNormRecalibration", "CompileSettings", "CosineDecayEpochs", "DataSettings",
         "PhaseSettings", "PolyDecayEpochs", "RunSettings", "TrainResult", "compile_model",
         "cosine_lr", "finetune", "poly_lr", "recalibrate_batchnorm", "train",
         "VolumeDataSettings"),
        "vggunet.training"),
    **dict.fromkeys(
        ("create_mask", "predict_folder", "predict_image_file", "predict_mask", "predict_proba",
         "predict_tiled", "predict_volume", "scores_to_labels", "volume_labels"),
        "vggunet.inference"),
    **dict.fromkeys(("evaluate",), "vggunet.evaluate"),
    **dict.fromkeys(("evaluate_volumes", "format_volume_scores"), "vggunet.volume_evaluation"),
    **dict.fromkeys(("export_model",), "vggunet.export"),
    **dict.fromkeys(("load_model", "save_model"), "vggunet.saving"),
    **dict.fromkeys(("display", "plot_history", "plot_predictions"), "vggunet.plots"),
    "plot_volume_slices": "vggunet.plots_volume",
}

# Modules reachable as attributes (`vggunet.losses.DiceLoss`) without an explicit import.
_SUBMODULES = frozenset({
    "augment", "blocks", "checks", "choices", "cli", "console", "data", "demo", "distribute",
    "encoders", "errors", "evaluate", "export", "fileio", "freezing", "inference", "inspect",
    "layers", "losses", "metrics", "models", "plots", "plots_confusion", "plots_volume",
    "precision", "predict", "saving", "training", "transfer", "unet", "unet3d",
    "volume_evaluation", "weights",
})

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, _SUBMODULES)

_serializables.register_when_keras_loads()
