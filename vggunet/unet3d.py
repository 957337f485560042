"""Compatibility alias of `vggunet.models.unet3d`, where this module's code now lives."""

from vggunet.models.unet3d import *  # noqa: F401,F403
