"""A weighted sum of two losses (``get_loss("ce+dice")`` builds one)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Sequence

import keras
from keras import ops

from vggunet._serializables import PACKAGE
from vggunet.errors import ArgumentError
from vggunet.losses.base import AttributeConfig

__all__ = ["CombinedLoss"]


def _as_loss(value: Any, role: str) -> keras.losses.Loss:
    """Accept a Loss, its serialized dict, or a ``get_loss`` name."""
    if isinstance(value, keras.losses.Loss):
        return value
    if isinstance(value, Mapping):
        loss = keras.saving.deserialize_keras_object(dict(value))
    elif isinstance(value, str):
        # Imported here: the factory imports this module to build "ce+dice".
        from vggunet.losses.factory import get_loss

        loss = get_loss(value)
    else:
        loss = None
    if not isinstance(loss, keras.losses.Loss):
        raise ArgumentError(
            f"{role} must be a keras.losses.Loss, its serialized config or a "
            f"loss name; got {value!r}."
        )
    return loss


def _weight_pair(weights: Any) -> tuple[float, float]:
    """Two finite, non-negative floats, not both zero."""
    try:
        pair = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise ArgumentError(
            f"weights must be two non-negative numbers; got {weights!r}."
        ) from None
    if len(pair) != 2 or any(not math.isfinite(w) or w < 0 for w in pair) or not any(pair):
        raise ArgumentError(
            "weights must be two finite, non-negative numbers, not both "
            f"zero; got {weights!r}."
        )
    return pair  # type: ignore[return-value]


@keras.saving.register_keras_serializable(package=PACKAGE)
class CombinedLoss(AttributeConfig, keras.losses.Loss):
    """Weighted sum ``w0 * first + w1 * second`` of two losses.

    Each child applies its own reduction and receives the same
    ``sample_weight``; this object's ``reduction`` is stored for Keras
    compatibility only.

    Args:
        first: A ``keras.losses.Loss``, its serialized dict, or a name known
            to ``get_loss``.
        second: Same as ``first``.
        weights: Two finite, non-negative weights, not both zero.
        name: Loss name.
        reduction: Accepted for Keras compatibility; unused.
        dtype: Keras dtype policy.
    """

    config_keys = ("dtype", "first", "second", "weights")

    def __init__(
        self,
        first: Any,
        second: Any,
        weights: Sequence[float] = (1.0, 1.0),
        name: str = "combined_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.first = _as_loss(first, "first")
        self.second = _as_loss(second, "second")
        self.weights = _weight_pair(weights)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Weighted sum of the children's reduced losses, without sample weights.

        Args:
            y_true: Sparse labels.
            y_pred: Probabilities or logits.

        Returns:
            Scalar float32 loss.
        """
        return self(y_true, y_pred)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any | None = None) -> Any:
        """Weighted sum of the children's losses.

        Args:
            y_true: Sparse labels.
            y_pred: Probabilities or logits.
            sample_weight: Passed unchanged to both children.

        Returns:
            ``weights[0] * first + weights[1] * second``.
        """
        with keras.name_scope(self.name):
            a = ops.cast(self.first(y_true, y_pred, sample_weight=sample_weight), "float32")
            b = ops.cast(self.second(y_true, y_pred, sample_weight=sample_weight), "float32")
            return self.weights[0] * a + self.weights[1] * b

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CombinedLoss:
        """Rebuild from ``get_config`` output, deserializing both children.

        Args:
            config: Dict produced by ``get_config``.

        Returns:
            A new ``CombinedLoss``.
        """
        config = dict(config)
        for key in ("first", "second"):
            if isinstance(config.get(key), Mapping):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
