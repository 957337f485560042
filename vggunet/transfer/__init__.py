"""Transfer learning: freezing/unfreezing with Keras's BatchNorm rule, and layer inspection."""

from vggunet.transfer.freezing import (
    FreezeReport, encoder_blocks, freeze, recompile, select_layers, top_blocks, unfreeze,
)
from vggunet.transfer.inspect import (
    LayerRow, all_layers, format_layers, layer_roles, layer_table, print_layers,
)

__all__ = [
    "FreezeReport", "LayerRow", "all_layers", "encoder_blocks", "format_layers", "freeze",
    "layer_roles", "layer_table", "print_layers", "recompile", "select_layers", "top_blocks",
    "unfreeze",
]
