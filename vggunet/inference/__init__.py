"""Inference: probabilities and masks for images of any size, tiling, TTA, writing results."""

from vggunet.data.images import IMAGE_SUFFIXES, read_image
from vggunet.errors import OutputError, PredictionError
from vggunet.inference.folder import predict_folder
from vggunet.inference.outputs import (
    colorize, default_palette, overlay_image, save_mask_png, save_overlay,
)
from vggunet.inference.predict import MIN_SIZE, create_mask, predict_mask, predict_proba
from vggunet.inference.tiling import predict_tiled

__all__ = [
    "IMAGE_SUFFIXES", "MIN_SIZE", "OutputError", "PredictionError", "colorize", "create_mask",
    "default_palette", "overlay_image", "predict_folder", "predict_mask", "predict_proba",
    "predict_tiled", "read_image", "save_mask_png", "save_overlay",
]
