"""Segmentation data: pairing and layouts, image/mask reading, validation, pipelines."""

from vggunet.data.pipeline import *  # noqa: F401,F403
from vggunet.data.pipeline import __all__  # noqa: F401
