"""Compatibility alias of `vggunet.models.unet`, where this module's code now lives."""

from vggunet.models.unet import *  # noqa: F401,F403
