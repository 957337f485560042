"""Compatibility alias of `vggunet.transfer.inspect`, where this module's code now lives."""

from vggunet.transfer.inspect import *  # noqa: F401,F403
