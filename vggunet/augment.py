"""Compatibility alias of `vggunet.data.augment`, where this module's code now lives."""

from vggunet.data.augment import *  # noqa: F401,F403
