"""Compatibility alias of `vggunet.models.precision`, where this module's code now lives."""

from vggunet.models.precision import *  # noqa: F401,F403
