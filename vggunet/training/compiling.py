"""Compiling a segmentation model with vggunet's losses and metrics: `compile_model`."""

from __future__ import annotations

from typing import Any, Sequence

import keras

from vggunet.errors import ArgumentError
from vggunet.evaluate import output_data_format, output_is_logits
from vggunet.losses import get_loss
from vggunet.metrics import get_metrics
from vggunet.training.settings import TRAIN_PHASE, CompileSettings

__all__ = ["compile_model"]

_DEFAULTS = CompileSettings()


def _make_optimizer(optimizer: Any, learning_rate: float) -> keras.optimizers.Optimizer:
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise ArgumentError(f"optimizer must be a name or an Optimizer, got {optimizer!r}.")
    cls = type(keras.optimizers.get(optimizer))
    return cls(learning_rate=float(learning_rate))


def _loss(loss: Any, num_classes: int, from_logits: bool, ignore_index: int | None,
          class_weights: Sequence[float] | None, data_format: str) -> Any:
    if not isinstance(loss, str):
        return loss
    kwargs: dict[str, Any] = {"num_classes": num_classes, "from_logits": from_logits,
                              "ignore_index": ignore_index, "data_format": data_format}
    if class_weights is not None:
        kwargs["class_weights"] = class_weights
    return get_loss(loss, **kwargs)


def compile_model(
    model: keras.Model,
    num_classes: int | None = _DEFAULTS.num_classes,
    loss: str | keras.losses.Loss = _DEFAULTS.loss,
    learning_rate: float = TRAIN_PHASE.learning_rate,
    metrics: Sequence[Any] | str = _DEFAULTS.metrics,
    ignore_index: int | None = _DEFAULTS.ignore_index,
    class_weights: Sequence[float] | None = _DEFAULTS.class_weights,
    optimizer: str | keras.optimizers.Optimizer = _DEFAULTS.optimizer,
    jit_compile: bool | str = _DEFAULTS.jit_compile,
    from_logits: bool | str = "auto",
) -> keras.Model:
    """Compiles a segmentation model with vggunet's losses and metrics.

    Defaults: `CompileSettings` (and `TRAIN_PHASE`'s learning rate).

    Args:
        model: a model with `(B, H, W, K)` output, or a volume model (`(B, H, W, D, K)`, or
            `(B, K, H, W, D)` channels first: the volume loss and metrics get the format).
        num_classes: classes (default: the output channels; 1 channel = binary sigmoid).
        loss: a `get_loss` name (`vggunet.choices.LOSS_NAMES`: "ce", "dice", "lovasz", "ohem",
            ...) or a Loss.
        learning_rate: learning rate for an optimizer given by name.
        metrics: `get_metrics` names and/or Metric instances.
        ignore_index: mask value not counted by loss and metrics.
        class_weights: per-class loss weights.
        optimizer: optimizer name ("adam", "sgd", ...) or instance.
        jit_compile: passed to `model.compile`.
        from_logits: "auto" reads the model's last layer (softmax/sigmoid = probabilities).

    Returns:
        The same model, compiled.
    """
    data_format = output_data_format(model)
    if num_classes is None:
        num_classes = int(model.output_shape[1 if data_format == "channels_first" else -1])
    if from_logits == "auto":
        from_logits = output_is_logits(model)
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m.strip()]
    metric_objs: list[Any] = []
    for m in metrics or ():
        if isinstance(m, str):
            metric_objs.extend(get_metrics([m], num_classes, ignore_index, from_logits,
                                           data_format=data_format))
        else:
            metric_objs.append(m)
    model.compile(
        optimizer=_make_optimizer(optimizer, learning_rate),
        loss=_loss(loss, num_classes, from_logits, ignore_index, class_weights, data_format),
        metrics=metric_objs,
        jit_compile=jit_compile,
    )
    return model
