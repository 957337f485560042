"""Inference: probabilities and masks for images of any size, tiling, TTA, writing results.

Modules: `predict` (probabilities and masks, TTA, mirror padding), `tiling` (large images in
blended tiles), `labels` (scores → class labels), `outputs` (mask PNGs, colours, overlays),
`folder` (image files and folders), `volume` (whole-scan 3D prediction by sliding window),
`volume_outputs` (label volumes as NIfTI or `.npy`). Names load on first use, so the numpy-only
`vggunet.inference.labels` (used by plots and the demo) is importable without TensorFlow.
"""

from vggunet._lazy import lazy_namespace

_EXPORTS = {
    **dict.fromkeys(("IMAGE_SUFFIXES", "read_image"), "vggunet.data.images"),
    **dict.fromkeys(("OutputError", "PredictionError"), "vggunet.errors"),
    **dict.fromkeys(("predict_folder", "predict_image_file"), "vggunet.inference.folder"),
    **dict.fromkeys(("create_mask", "scores_to_labels"), "vggunet.inference.labels"),
    **dict.fromkeys(("colorize", "default_palette", "overlay_image", "read_class_names",
                     "save_mask_png", "save_overlay"), "vggunet.inference.outputs"),
    **dict.fromkeys(("check_scales", "predict_multiscale"), "vggunet.inference.multiscale"),
    **dict.fromkeys(("MIN_SIZE", "predict_mask", "predict_proba"), "vggunet.inference.predict"),
    **dict.fromkeys(("default_overlap", "predict_tiled"), "vggunet.inference.tiling"),
    **dict.fromkeys(("BLEND_MODES", "blend_window", "predict_volume", "volume_labels"),
                    "vggunet.inference.volume"),
    **dict.fromkeys(("reference_affine", "save_volume"), "vggunet.inference.volume_outputs"),
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
