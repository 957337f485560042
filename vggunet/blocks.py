"""Compatibility alias of `vggunet.models.blocks`, where this module's code now lives."""

from vggunet.models.blocks import *  # noqa: F401,F403
