"""vggunet: Keras 3 U-Nets for semantic segmentation by transfer learning.

The public API, re-exported from the modules that implement it.
"""

import os as _os

# TensorFlow's C++ start-up chatter (oneDNN notes, "no CUDA driver" on CPU machines) drowns the
# CLI's output; Python exceptions are unaffected. Set TF_CPP_MIN_LOG_LEVEL yourself to see it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from vggunet.blocks import conv_block, decoder_stage, upsampling_block
from vggunet.data import DataError, make_dataset
from vggunet.encoders import ENCODERS, EncoderSpec, build_encoder, get_encoder_spec
from vggunet.evaluate import evaluate
from vggunet.export import ExportError, export_model
from vggunet.freezing import (
    FreezeReport,
    encoder_blocks,
    freeze,
    recompile,
    select_layers,
    top_blocks,
    unfreeze,
)
from vggunet.inspect import LayerRow, format_layers, layer_roles, layer_table, print_layers
from vggunet.layers import BackbonePreprocess, CropToReference, PadToMultiple
from vggunet.plots import display, plot_history, plot_predictions
from vggunet.precision import resolve_precision
from vggunet.predict import (
    PredictionError,
    create_mask,
    predict_folder,
    predict_mask,
    predict_proba,
    predict_tiled,
)
from vggunet.saving import ModelFileError, UnsafeModelError, load_model, save_model
from vggunet.training import (
    BatchNormRecalibration,
    CosineDecayEpochs,
    TrainResult,
    compile_model,
    cosine_lr,
    finetune,
    recalibrate_batchnorm,
    train,
)
from vggunet.unet import build_encoder_unet, build_unet, build_vgg_unet
from vggunet.unet3d import build_unet_3d
from vggunet.weights import ImagenetWeightsUnavailable, WeightsError, load_backbone_weights

__version__ = "0.1.0"

__all__ = [
    "BackbonePreprocess",
    "BatchNormRecalibration",
    "CosineDecayEpochs",
    "CropToReference",
    "DataError",
    "ENCODERS",
    "EncoderSpec",
    "ExportError",
    "FreezeReport",
    "ImagenetWeightsUnavailable",
    "LayerRow",
    "PadToMultiple",
    "PredictionError",
    "TrainResult",
    "UnsafeModelError",
    "ModelFileError",
    "WeightsError",
    "build_encoder",
    "build_encoder_unet",
    "build_unet",
    "build_unet_3d",
    "build_vgg_unet",
    "compile_model",
    "conv_block",
    "cosine_lr",
    "create_mask",
    "decoder_stage",
    "display",
    "encoder_blocks",
    "evaluate",
    "export_model",
    "finetune",
    "recalibrate_batchnorm",
    "format_layers",
    "freeze",
    "get_encoder_spec",
    "layer_roles",
    "layer_table",
    "load_backbone_weights",
    "load_model",
    "make_dataset",
    "plot_history",
    "plot_predictions",
    "predict_folder",
    "predict_mask",
    "predict_proba",
    "predict_tiled",
    "print_layers",
    "recompile",
    "resolve_precision",
    "save_model",
    "select_layers",
    "top_blocks",
    "train",
    "unfreeze",
    "upsampling_block",
]
