"""Transfer learning: freezing/unfreezing with Keras's BatchNorm rule, and layer inspection.

Names load on first use, so the keras-free `vggunet.transfer.numbering` (which the CLI reads to
check `--freeze encoder[:10]`) can be imported without Keras.
"""

from vggunet._lazy import lazy_namespace

_EXPORTS = {
    **dict.fromkeys(("FreezeReport", "encoder_blocks", "freeze", "recompile", "select_layers",
                     "top_blocks", "unfreeze"), "vggunet.transfer.freezing"),
    **dict.fromkeys(("LayerRow", "all_layers", "format_layers", "layer_roles", "layer_table",
                     "print_layers"), "vggunet.transfer.inspect"),
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, ("freezing", "inspect", "numbering"))
