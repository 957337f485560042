"""Compatibility alias of `vggunet.models.registry`, where this module's code now lives."""

from vggunet.models.registry import *  # noqa: F401,F403
