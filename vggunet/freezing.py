"""Compatibility alias of `vggunet.transfer.freezing`, where this module's code now lives."""

from vggunet.transfer.freezing import *  # noqa: F401,F403
