"""Segmentation losses (registered under the `vggunet` package for `.keras` files)."""

from vggunet.losses.core import *  # noqa: F401,F403
from vggunet.losses.core import __all__  # noqa: F401
