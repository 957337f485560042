"""Compatibility alias of `vggunet.models.registry` and `vggunet.models.encoder`."""

from vggunet.models.encoder import *  # noqa: F401,F403
from vggunet.models.registry import *  # noqa: F401,F403
