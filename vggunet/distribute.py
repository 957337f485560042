"""Compatibility alias of `vggunet.training.distribute`, where this module's code now lives."""

from vggunet.training.distribute import *  # noqa: F401,F403
