"""Compute precision: pick bfloat16 where the hardware runs it natively, float32 elsewhere.

Models are built under a Keras dtype policy. With `"mixed_bfloat16"` layers compute in bfloat16
while their variables stay float32; vggunet's heads and preprocessing layers are pinned to
float32, so outputs and losses stay float32 whatever the policy.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Iterator

import keras

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


@functools.lru_cache(maxsize=1)
def cpu_has_bfloat16() -> bool:
    """Whether this CPU has native bfloat16 instructions (AVX512-BF16 or AMX-BF16).

    Returns:
        True when `/proc/cpuinfo` lists `avx512_bf16` or `amx_bf16`; False elsewhere (or when the
        file cannot be read, e.g. on macOS/Windows).
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set(text.split())
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache(maxsize=1)
def gpu_has_bfloat16() -> bool | None:
    """Whether the first visible GPU supports bfloat16 (compute capability >= 8.0).

    Returns:
        True/False for a visible TensorFlow GPU, None when there is no GPU or the backend is not
        TensorFlow (the question is then moot or cannot be answered without importing another
        framework).
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability") or (0, 0)
    return tuple(capability) >= (8, 0)


def resolve_precision(precision: str = "auto") -> str:
    """Turns a precision request into a Keras dtype policy name.

    Args:
        precision: `"auto"` (mixed_bfloat16 on a bfloat16-capable GPU, or on a CPU with
            AVX512-BF16/AMX when there is no GPU; float32 otherwise), `"float32"`,
            `"mixed_bfloat16"` or `"mixed_float16"`.

    Returns:
        The policy name, e.g. `"mixed_bfloat16"`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision != "auto":
        return precision
    gpu = gpu_has_bfloat16()
    if gpu is not None:
        return "mixed_bfloat16" if gpu else "float32"
    return "mixed_bfloat16" if cpu_has_bfloat16() else "float32"


@contextlib.contextmanager
def dtype_policy(precision: str = "auto") -> Iterator[str]:
    """Builds layers under the policy for `precision`, restoring the global policy afterwards.

    Args:
        precision: see `resolve_precision`.

    Yields:
        The policy name in force inside the block.
    """
    policy = resolve_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)
