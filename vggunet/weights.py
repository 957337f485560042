"""Compatibility alias of `vggunet.models.weights`, where this module's code now lives."""

from vggunet.models.weights import *  # noqa: F401,F403
