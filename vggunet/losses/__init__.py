"""Segmentation losses (registered under the `vggunet` package for `.keras` files).

One module per concern: `base` (conventions, argument checks, tensor helpers, the shared base
class), `crossentropy` (per-pixel losses: CE, focal, OHEM), `overlap` (Dice, Jaccard), `lovasz`
(Lovász-softmax), `combined` (a weighted sum of two), `factory` (`get_loss` by name).
Importing this package registers every loss class.
"""

from vggunet.losses.base import (  # noqa: F401  (public helpers of the old flat module)
    EPSILON,
    class_probabilities,
    effective_num_classes,
    pixel_weights,
    prepare_labels,
    validate_class_weights,
    validate_ignore_index,
    validate_num_classes,
)
from vggunet.losses.combined import CombinedLoss
from vggunet.losses.crossentropy import (
    FocalLoss,
    OhemCrossEntropyLoss,
    SparseCategoricalCrossentropy,
)
from vggunet.losses.factory import LOSS_NAMES, get_loss
from vggunet.losses.lovasz import LovaszSoftmaxLoss
from vggunet.losses.overlap import DiceLoss, JaccardLoss
from vggunet.losses.volumetric import SoftDiceLoss

__all__ = [
    "SparseCategoricalCrossentropy",
    "DiceLoss",
    "JaccardLoss",
    "FocalLoss",
    "CombinedLoss",
    "LovaszSoftmaxLoss",
    "OhemCrossEntropyLoss",
    "SoftDiceLoss",
    "get_loss",
    "LOSS_NAMES",
]
