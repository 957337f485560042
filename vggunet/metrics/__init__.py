"""Segmentation metrics (registered under the `vggunet` package for `.keras` files)."""

from vggunet.metrics.core import *  # noqa: F401,F403
from vggunet.metrics.core import __all__  # noqa: F401
