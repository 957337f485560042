"""Compatibility alias of `vggunet.models.layers`, where this module's code now lives."""

from vggunet.models.layers import *  # noqa: F401,F403
