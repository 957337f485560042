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

from vggunet import choices
from vggunet.checks import check_choice

PRECISIONS = choices.PRECISIONS


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
    """Whether the active Keras backend's first accelerator supports bfloat16.

    A GPU does when its compute capability is >= 8.0 (Ampere); a TPU (JAX) always does. Each
    backend is asked through its own framework, which the backend has already imported.

    Returns:
        True/False for a visible GPU (or TPU), None when the backend sees no accelerator.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = details.get("compute_capability") or (0, 0)
        return tuple(capability) >= (8, 0)
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "tpu":
            return True
        if device.platform != "gpu":
            return None
        # CUDA devices report "8.0"; ROCm devices have no compute_capability.
        text = str(getattr(device, "compute_capability", "") or "0.0")
        try:
            return tuple(int(p) for p in text.split(".")[:2]) >= (8, 0)
        except ValueError:
            return False
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        return tuple(torch.cuda.get_device_capability(0)) >= (8, 0)
    return None


def resolve_precision(precision: str = "auto") -> str:
    """Turns a precision request into a Keras dtype policy name.

    Args:
        precision: `"auto"` (mixed_bfloat16 on a bfloat16-capable GPU or a TPU, or, on the
            TensorFlow and PyTorch backends, on a CPU with AVX512-BF16/AMX when there is no
            accelerator; float32 otherwise), `"float32"`, `"mixed_bfloat16"` or
            `"mixed_float16"`.

    Returns:
        The policy name, e.g. `"mixed_bfloat16"`.

    Example:
        >>> resolve_precision("float32")
        'float32'
        >>> resolve_precision("auto") in ("float32", "mixed_bfloat16")
        True
    """
    if check_choice(precision, PRECISIONS, "precision") != "auto":
        return precision
    gpu = gpu_has_bfloat16()
    if gpu is not None:
        return "mixed_bfloat16" if gpu else "float32"
    if keras.backend.backend() == "jax":
        # XLA:CPU has no native bfloat16 convolutions (it converts around float32 kernels), so
        # bfloat16 gains nothing there while losing precision; TF and PyTorch use oneDNN's.
        return "float32"
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
