"""Compatibility alias of `vggunet.inference`, where this module's code now lives."""

from vggunet.inference import *  # noqa: F401,F403
