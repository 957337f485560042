"""Segmentation data: pairs and layouts, image/mask reading, validation, weights, pipelines.

Modules by concern (names load on first use, so pairing or reading files imports neither
TensorFlow nor Keras; only `make_dataset` and the augmentations need TensorFlow):

* `vggunet.data.pairs`: pairing images and masks by name, data-set layouts, pairs lists.
* `vggunet.data.images`: the one image decoding path (`load_image`, the prediction-side
  `read_image`) and the one extension list.
* `vggunet.data.masks`: masks as class indices in the four encodings (`load_mask`).
* `vggunet.data.validate`: `validate_pairs`, `DatasetInfo`, `class_weights`.
* `vggunet.data.weightmaps`: U-Net border weights.
* `vggunet.data.pipeline`: `make_dataset`, the tf.data pipeline.
* `vggunet.data.augment`: `Augment` (which augmentations, parsed from a spec, seeded);
  `transforms`: the stateless TensorFlow ops (flips, rotations, elastic, brightness/contrast);
  `photo_augment` adds random scale-then-crop and saturation/hue jitter for natural photos.
* Volumes (3D): `volume_io` (NIfTI, `.npy`, the lab's `.h5`), `volume_cases` (layouts,
  `find_volume_cases`, `load_case`, validation), `volume_patches` (standardisation, padding,
  the lab's patch sampler), `volume_augment`, `volume_pipeline` (`make_volume_dataset`, a
  Keras `PyDataset`, the one volume module that imports Keras).
"""

from vggunet._lazy import lazy_namespace

_EXPORTS = {
    "DataError": "vggunet.errors",
    **dict.fromkeys(("IMAGE_EXTENSIONS", "load_image"), "vggunet.data.images"),
    **dict.fromkeys(("Layout", "MASK_SUFFIXES", "discover_layout", "find_pairs", "load_split",
                     "read_pairs_list"), "vggunet.data.pairs"),
    **dict.fromkeys(("MASK_FORMATS", "load_mask"), "vggunet.data.masks"),
    **dict.fromkeys(("DatasetInfo", "class_weights", "validate_pairs"), "vggunet.data.validate"),
    "border_weight_map": "vggunet.data.weightmaps",
    "make_dataset": "vggunet.data.pipeline",
    "Augment": "vggunet.data.augment",
    **dict.fromkeys(("elastic_deform", "random_brightness_contrast", "random_flip",
                     "random_rot90", "random_rotate", "reflect_index"), "vggunet.data.transforms"),
    **dict.fromkeys(("adjust_saturation_hue", "random_saturation_hue", "random_scale_crop"),
                    "vggunet.data.photo_augment"),
    **dict.fromkeys(("VolumeCase", "VolumeSetInfo", "find_volume_cases", "load_case",
                     "validate_volume_cases"), "vggunet.data.volume_cases"),
    **dict.fromkeys(("read_h5_patch", "read_volume"), "vggunet.data.volume_io"),
    **dict.fromkeys(("one_hot_volume", "pad_to_shape", "sample_patch", "standardize_volume"),
                    "vggunet.data.volume_patches"),
    "augment_volume": "vggunet.data.volume_augment",
    **dict.fromkeys(("VolumePatchDataset", "make_volume_dataset"),
                    "vggunet.data.volume_pipeline"),
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_namespace(
    __name__, _EXPORTS,
    ("augment", "images", "masks", "pairs", "photo_augment", "pipeline", "validate", "weightmaps",
     "volume_augment", "volume_cases", "volume_io", "volume_patches", "volume_pipeline"))
