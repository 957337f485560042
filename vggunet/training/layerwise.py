"""Layer-wise learning rates for fine-tuning: lower encoder stages train at a fraction of the rate.

Design (`PhaseSettings.layerwise_lr = F`, F in (0, 1]): encoder stage i of N (1 = the lowest,
as `vggunet.transfer.freezing.encoder_blocks` numbers them) trains at `rate * F ** (N - i)`;
the top stage, the bottleneck, the decoder and the head train at the phase's rate. Encoder
layers outside every stage (stems, preprocessing) go with the lowest stage. The low stages
hold the most generic pretrained features, so the whole encoder can be unfrozen while they
move least.

Keras 3 optimizers have one learning rate. Each built-in optimizer class `C` gets a registered
subclass `LayerwiseC` (`"vggunet>LayerwiseAdam"`, ...) whose `update_step` multiplies the
rate it is given by the variable's multiplier, looked up by the variable's path
(`"block1_conv1/kernel"`). The multipliers are part of the optimizer's config, so a `.keras`
checkpoint saves and loads them (a resume goes on with the same rates), and `recompile`, which
rebuilds an optimizer from its config, keeps them. Weight decay (AdamW, ...) is applied at the
optimizer's own rate. Measured on the TensorFlow backend (JAX calls `update_step` the same way).
"""

from __future__ import annotations

from typing import Any, Mapping

import keras

from vggunet._serializables import PACKAGE
from vggunet.checks import check_number
from vggunet.errors import ArgumentError

__all__ = ["LayerwiseRates", "apply_layerwise_lr", "layerwise_multipliers",
           "layerwise_optimizer"]


class LayerwiseRates:
    """Mixin of the `Layerwise<Optimizer>` classes: a learning-rate multiplier per variable.

    Args:
        *args: the optimizer's own arguments.
        lr_multipliers: variable path -> multiplier of the learning rate (absent: 1).
        **kwargs: the optimizer's own keywords.
    """

    def __init__(self, *args: Any, lr_multipliers: Mapping[str, float] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}

    def update_step(self, gradient, variable, learning_rate):
        """The wrapped optimizer's update at the variable's rate.

        Args:
            gradient: the variable's gradient.
            variable: the variable (as the backend passes it).
            learning_rate: the optimizer's current rate.

        Returns:
            What the wrapped `update_step` returns.
        """
        # Traced once per variable: the look-up is Python, the product a graph constant.
        index = self._get_variable_index(variable)
        scale = self.lr_multipliers.get(self._trainable_variables[index].path, 1.0)
        if scale != 1.0:
            learning_rate = learning_rate * scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        """The wrapped optimizer's config with `lr_multipliers`.

        Returns:
            The config.
        """
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}


def _register_builtin_classes() -> dict[type, type]:
    """`Layerwise<C>` for every built-in Keras optimizer class `C`, registered by name."""
    classes: dict[type, type] = {}
    # Wrappers of other optimizers have no update step of their own.
    excluded = ("Optimizer", "LossScaleOptimizer", "MultiOptimizer")
    for name in sorted(dir(keras.optimizers)):
        base = getattr(keras.optimizers, name)
        if not isinstance(base, type) or not issubclass(base, keras.optimizers.Optimizer) \
                or name in excluded:
            continue
        cls = type(f"Layerwise{base.__name__}", (LayerwiseRates, base),
                   {"__module__": __name__,
                    "__doc__": f"`keras.optimizers.{base.__name__}` with layer-wise rates "
                               f"(`LayerwiseRates`)."})
        classes[base] = keras.saving.register_keras_serializable(package=PACKAGE)(cls)
    return classes


_LAYERWISE_CLASSES = _register_builtin_classes()


def layerwise_multipliers(model: keras.Model, factor: float) -> dict[str, float]:
    """The learning-rate multiplier of each encoder variable below the top stage.

    Args:
        model: a vggunet U-Net (its encoder stages as its builder recorded them).
        factor: F in (0, 1]: stage i of N gets `F ** (N - i)`.

    Returns:
        Variable path -> multiplier, for the variables whose multiplier is not 1.

    Raises:
        ArgumentError: `factor` out of range, or a model without encoder stages.
    """
    from vggunet.models.roles import ENCODER_ROLES
    from vggunet.transfer.freezing import _stage_of, encoder_blocks
    from vggunet.transfer.inspect import layer_roles

    factor = check_number(factor, "layerwise_lr", low=0, high=1, low_open=True)
    blocks = encoder_blocks(model)
    if not blocks:
        raise ArgumentError(f"layerwise_lr needs a model with encoder stages; model "
                            f"{model.name!r} has none.")
    depth = {block: len(blocks) - 1 - k for k, block in enumerate(blocks)}  # the top: 0
    roles = layer_roles(model)
    multipliers: dict[str, float] = {}
    for layer in model.layers:
        if roles.get(layer.name) not in ENCODER_ROLES:
            continue
        scale = factor ** depth.get(_stage_of(model, layer.name), len(blocks) - 1)
        if scale != 1.0:
            multipliers.update((weight.path, scale) for weight in layer.weights)
    return multipliers


def layerwise_optimizer(optimizer: keras.optimizers.Optimizer,
                        multipliers: Mapping[str, float]) -> keras.optimizers.Optimizer:
    """A new, unbuilt optimizer like `optimizer` with per-variable rate multipliers.

    Args:
        optimizer: a built-in Keras optimizer (or a `Layerwise` one, whose multipliers are
            replaced); its state is not copied.
        multipliers: variable path -> multiplier (see `layerwise_multipliers`).

    Returns:
        An instance of the registered `Layerwise<Class>` with `optimizer`'s config.

    Raises:
        ArgumentError: an optimizer class that is not one of Keras's own.

    Example:
        >>> sgd = layerwise_optimizer(keras.optimizers.SGD(0.1), {"block1_conv1/kernel": 0.5})
        >>> type(sgd).__name__, sgd.get_config()["lr_multipliers"]
        ('LayerwiseSGD', {'block1_conv1/kernel': 0.5})
    """
    cls = _layerwise_class(type(optimizer))
    if cls is None:
        names = ", ".join(sorted(base.__name__ for base in _LAYERWISE_CLASSES))
        raise ArgumentError(f"layerwise_lr needs one of Keras's optimizers ({names}), got "
                            f"{type(optimizer).__name__}.")
    return cls.from_config({**optimizer.get_config(), "lr_multipliers": dict(multipliers)})


def _layerwise_class(cls: type) -> type | None:
    """The `Layerwise` class of a Keras optimizer class (or of its backend's version of it:
    torch's `keras.optimizers.Adam(...)` is a subclass); None for classes of other packages."""
    if cls in _LAYERWISE_CLASSES.values():
        return cls
    for base in cls.__mro__:
        if base in _LAYERWISE_CLASSES:
            return _LAYERWISE_CLASSES[base]
        if not base.__module__.startswith("keras."):
            return None
    return None


def apply_layerwise_lr(model: keras.Model, factor: float) -> dict[str, float]:
    """Recompiles a compiled model with layer-wise rates (its optimizer state starts anew).

    Call it inside the distribution strategy's scope, if any.

    Args:
        model: a compiled vggunet U-Net.
        factor: F in (0, 1] (see the module docstring).

    Returns:
        The multipliers now in use (variable path -> multiplier).
    """
    from vggunet.transfer.freezing import recompile

    multipliers = layerwise_multipliers(model, factor)
    # Mixed precision wraps the optimizer in a LossScaleOptimizer; compile wraps it again.
    current = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    recompile(model, optimizer=layerwise_optimizer(current, multipliers))
    return multipliers
