"""Compatibility alias of `vggunet.models.unet` and `vggunet.models.reference` (`build_unet`)."""

from vggunet.models.reference import *  # noqa: F401,F403
from vggunet.models.unet import *  # noqa: F401,F403
