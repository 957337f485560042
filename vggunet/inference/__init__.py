"""Inference: probabilities and masks for images of any size, tiling, TTA, writing results."""

from vggunet.data.images import IMAGE_SUFFIXES, read_image
from vggunet.errors import OutputError, PredictionError
from vggunet.inference.folder import predict_folder, predict_image_file
from vggunet.inference.labels import create_mask, scores_to_labels
from vggunet.inference.outputs import (
    colorize, default_palette, overlay_image, save_mask_png, save_overlay,
)
from vggunet.inference.predict import MIN_SIZE, predict_mask, predict_proba
from vggunet.inference.tiling import default_overlap, predict_tiled

__all__ = [
    "IMAGE_SUFFIXES", "MIN_SIZE", "OutputError", "PredictionError", "colorize", "create_mask",
    "default_overlap", "default_palette", "overlay_image", "predict_folder",
    "predict_image_file", "predict_mask", "predict_proba", "predict_tiled", "read_image",
    "save_mask_png", "save_overlay", "scores_to_labels",
]
