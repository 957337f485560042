"""What vggunet prints: progress lines through a `say` function, and progress bars.

Long-running functions take `verbose` (and some a `say` callback): `verbose=False` (the CLI's
`--quiet`) silences vggunet's own lines and bars; `say` redirects the lines, e.g. to a logger
(`say=logging.getLogger("vggunet").info`). Work that is not a Keras `fit` (predicting a folder,
evaluating a data set, tiled prediction of a large image) shows a Keras `Progbar` with a count
and an ETA when it has more than one step.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

Say = Callable[[str], Any]
"""A function that shows one line of progress text."""


def _print_line(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


def _silent(text: str) -> None:
    return None


def resolve_say(verbose: bool | int = True, say: Say | None = None) -> Say:
    """The function to show progress lines with.

    Args:
        verbose: False/0 silences the lines (unless `say` is given).
        say: an explicit line sink; wins over `verbose`.

    Returns:
        `say`, `print` (to stdout, flushed) or a no-op.

    Example:
        >>> resolve_say(verbose=False)("not shown")
        >>> resolve_say(say=lambda text: print(text.upper()))("shown")
        SHOWN
    """
    if say is not None:
        return say
    return _print_line if verbose else _silent


class Progress:
    """A progress bar over `total` steps: Keras's `Progbar` (count, rate, ETA), or nothing.

    Used as a context manager; `advance(n)` moves it on. Silent when `verbose` is false or
    `total` < 2 (one step needs no bar).

    Args:
        total: number of steps.
        unit: what a step is ("image", "tile", "batch").
        verbose: show the bar.
    """

    def __init__(self, total: int, unit: str = "step", verbose: bool | int = True) -> None:
        self.total = int(total)
        self.done = 0
        self._bar = None
        if verbose and self.total > 1:
            import keras  # imported only when a bar is shown: keeps keras-free callers light

            self._bar = keras.utils.Progbar(self.total, unit_name=unit)

    def advance(self, steps: int = 1) -> None:
        """Moves the bar on by `steps`.

        Args:
            steps: completed steps to add.
        """
        self.done += steps
        if self._bar is not None:
            self._bar.update(min(self.done, self.total))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None
