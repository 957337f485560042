"""Compatibility alias of `vggunet.transfer.inspect`, where this module's code now lives."""

from keras import layers  # noqa: F401  the old module exposed it; kept for `from ... import *`

from vggunet.transfer.inspect import *  # noqa: F401,F403
