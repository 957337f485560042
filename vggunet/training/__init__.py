"""Training: compile, train, two-phase fine-tuning, resumable run folders, distribution."""

from vggunet.training.loop import *  # noqa: F401,F403
from vggunet.training.loop import __all__  # noqa: F401
