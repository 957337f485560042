"""Models: the encoder registry, backbone weights, custom layers, blocks and the U-Net builders.

Modules: `registry` (backbones, keras-free), `encoder` (`build_encoder`), `weights`, `layers`
(custom layers), `blocks`, `unet` (`build_vgg_unet`), `reference` (the lab's 2D U-Net),
`unet3d`, `model` (`SegmentationModel`, `Encoder`: models that record their layer roles),
`roles` (role names and inference for models without a record), `precision`.

Names load on first use, so the keras-free registry (`vggunet.models.registry`) can be read
without importing Keras.
"""

from vggunet._lazy import lazy_namespace

_EXPORTS = {
    **dict.fromkeys(("conv_block", "decoder_stage", "upsampling_block"), "vggunet.models.blocks"),
    **dict.fromkeys(("BackbonePreprocess", "CropOrPadToReference", "CropToReference",
                     "PadToMultiple"), "vggunet.models.layers"),
    "resolve_precision": "vggunet.models.precision",
    **dict.fromkeys(("ENCODERS", "EncoderSpec", "get_encoder_spec"), "vggunet.models.registry"),
    "build_encoder": "vggunet.models.encoder",
    **dict.fromkeys(("build_encoder_unet", "build_vgg_unet"), "vggunet.models.unet"),
    "build_unet": "vggunet.models.reference",
    **dict.fromkeys(("Encoder", "SegmentationModel"), "vggunet.models.model"),
    "build_unet_3d": "vggunet.models.unet3d",
    "load_backbone_weights": "vggunet.models.weights",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
