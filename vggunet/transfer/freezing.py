"""Freezing and unfreezing layers for fine-tuning, with Keras's BatchNorm rule.

Keras's transfer-learning guide: a BatchNormalization layer with `trainable=False` runs in
inference mode (it uses, and does not update, its moving statistics), and when part of a
pretrained model is unfrozen its BatchNorm layers should stay in inference mode, or the first
batches wreck what the model learned. `unfreeze(..., train_bn=False)` (the default) therefore
leaves encoder BatchNorm layers frozen.

Layers can be chosen in the backbone's own numbering (`vggunet.transfer.numbering`):
`freeze(model, encoder_layers=10)` or `freeze(model, "encoder[:10]")` freezes what seed code's
`VGG16(...).layers[:10]` froze, for every backbone; `freeze(model, 10)` still counts the
model's own layers (input, preprocessing and padding included).

Keras compiles the list of trainable variables into the train step, so after changing
trainability the model must be compiled again: `recompile(model)` does that, keeping the loss,
metrics and optimizer settings.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Sequence, Union

import keras
from keras import layers

from vggunet.checks import check_int
from vggunet.errors import ArgumentError
from vggunet.models.roles import ENCODER_ROLES, ROLES
from vggunet.transfer.inspect import all_layers as nested_layers
from vggunet.transfer.inspect import layer_roles, param_totals
from vggunet.transfer.numbering import as_slice, backbone_range, parse_encoder_slice

FreezeSpec = Union[int, str, Sequence[str], Callable[[keras.layers.Layer], bool], None]
EncoderLayers = Union[int, slice, None]
_ROLE_SPECS = {
    "encoder": ENCODER_ROLES,
    "decoder": ("decoder",),
    "bottleneck": ("bottleneck",),
    "head": ("head",),
    "all": ROLES,
}


@dataclasses.dataclass(frozen=True)
class FreezeReport:
    """What a `freeze`/`unfreeze` call changed and where the model stands now."""

    action: str
    changed: tuple[str, ...]
    kept_frozen_bn: tuple[str, ...]
    trainable_layers: int
    frozen_layers: int
    trainable_params: int
    frozen_params: int

    def describe(self, recompile_hint: bool = True) -> str:
        """One line: what changed and the trainable/frozen totals.

        Args:
            recompile_hint: end with the advice to recompile (for users who changed
                trainability themselves; the library's own training recompiles and omits it).

        Returns:
            The line.
        """
        text = (
            f"{self.action}: {len(self.changed)} layer(s) changed; now {self.trainable_layers} "
            f"trainable / {self.frozen_layers} frozen layers, {self.trainable_params:,} "
            f"trainable / {self.frozen_params:,} frozen params"
        )
        if self.kept_frozen_bn:
            text += f"; {len(self.kept_frozen_bn)} encoder BatchNorm layer(s) kept frozen"
        return text + (". Recompile before training (vggunet.recompile)." if recompile_hint
                       else ".")

    def __str__(self) -> str:
        return self.describe()


def _block_number(name: str) -> int | None:
    # keras.applications names layers by stage: block4_conv1 (VGG), conv4_block2_out (ResNet),
    # pool1_pool (ResNet's stem pool, part of stage 1); the lab U-Nets by encoder block or
    # level: encoder_block4_dropout (2D), encoder_level0_conv1 (3D). Also parses `up_to`
    # values such as "block4", "conv4" or "stage4".
    match = re.match(r"(?:encoder_)?(?:block|conv|pool|level|stage)(\d+)", name)
    return int(match.group(1)) if match else None


def _stage_of(model: keras.Model, name: str) -> int | None:
    """The stage of an encoder layer: as the builder recorded it, else as its name says."""
    stages = getattr(model, "stages", None)
    if stages:
        return stages.get(name)
    return _block_number(name)


def _encoder_layers(model: keras.Model) -> list[keras.layers.Layer]:
    roles = layer_roles(model)
    return [layer for layer in model.layers if roles[layer.name] in ENCODER_ROLES]


def encoder_blocks(model: keras.Model) -> list[int]:
    """The encoder's stage numbers in order, e.g. [1, 2, 3, 4, 5] for VGG16 and ResNet50.

    Args:
        model: a vggunet model (encoder layers as recorded by its builder).

    Returns:
        Sorted distinct block numbers of encoder layers: `block4_*` (VGG), `conv4_*`
        (ResNet), `encoder_block4_*` (the lab's 2D U-Net), `encoder_level0_*` (3D U-Net).

    Example:
        >>> from vggunet import build_unet, build_unet_3d
        >>> encoder_blocks(build_unet(input_size=(32, 32, 3), n_filters=2))
        [1, 2, 3, 4]
        >>> encoder_blocks(build_unet_3d((1, 8, 8, 8), depth=3, base_filters=2))
        [0, 1]
    """
    numbers = {_stage_of(model, layer.name) for layer in _encoder_layers(model)}
    return sorted(n for n in numbers if n is not None)


def _select_up_to(model: keras.Model, up_to: str | int) -> list[keras.layers.Layer]:
    """The encoder layers of blocks up to and including `up_to`."""
    number = up_to if isinstance(up_to, int) else _block_number(str(up_to))
    blocks = encoder_blocks(model)
    if number is None or number not in blocks:
        raise ArgumentError(
            f"up_to={up_to!r} names no encoder block of model {model.name!r}; its blocks are "
            f"{blocks} (e.g. up_to='block{blocks[-1] if blocks else 1}')."
        )
    return [layer for layer in _encoder_layers(model)
            if (_stage_of(model, layer.name) or 0) <= number]


def _select_by_prefixes(model: keras.Model, spec: str | Sequence[str]) -> list:
    prefixes = [spec] if isinstance(spec, str) else list(spec)
    candidates = model.layers
    unmatched = [p for p in prefixes if not any(l.name.startswith(p) for l in candidates)]
    if unmatched:
        raise ArgumentError(
            f"freeze spec {unmatched} matches no layer of model {model.name!r}; valid forms: "
            f"an int, {sorted(_ROLE_SPECS)}, layer names or prefixes such as "
            f"{_example_prefixes(model)}, or a predicate."
        )
    return [l for l in candidates if any(l.name.startswith(p) for p in prefixes)]


def _select_by_spec(model: keras.Model, spec: FreezeSpec) -> list[keras.layers.Layer]:
    """Resolves a spec (not `up_to`): count, role, names/prefixes or predicate."""
    all_layers = list(model.layers)
    if isinstance(spec, bool):
        raise ArgumentError(f"freeze spec must not be a bool, got {spec!r}.")
    if isinstance(spec, int):
        if not 0 < spec <= len(all_layers):
            raise ArgumentError(
                f"freeze spec {spec} is out of range: model {model.name!r} has "
                f"{len(all_layers)} layers (use 1..{len(all_layers)})."
            )
        return all_layers[:spec]
    if isinstance(spec, str) and spec in _ROLE_SPECS:
        roles = layer_roles(model)
        return [layer for layer in all_layers if roles[layer.name] in _ROLE_SPECS[spec]]
    if isinstance(spec, str) and parse_encoder_slice(spec) is not None:
        return backbone_range(model, parse_encoder_slice(spec), f"freeze spec {spec!r}")
    if isinstance(spec, str) or (
        isinstance(spec, (list, tuple)) and all(isinstance(s, str) for s in spec)
    ):
        return _select_by_prefixes(model, spec)
    if callable(spec):
        return [layer for layer in all_layers if spec(layer)]
    raise ArgumentError(
        f"freeze spec must be an int, a name/prefix, a list of them or a predicate; got "
        f"{spec!r} ({type(spec).__name__})."
    )


def select_layers(
    model: keras.Model, spec: FreezeSpec = None, *, up_to: str | int | None = None,
    encoder_layers: EncoderLayers = None,
) -> list[keras.layers.Layer]:
    """Resolves a freeze spec to layers.

    Roles (`"encoder"`, ...), encoder blocks and the backbone's numbering come from what the
    builder recorded (see `vggunet.layer_roles`, `SegmentationModel.backbone_layers`).

    Args:
        model: the model.
        spec: an int N (the first N layers of the model, `model.layers[:N]`); `"encoder"`,
            `"decoder"`, `"bottleneck"`, `"head"` or `"all"` (by role); `"encoder[:N]"`,
            `"encoder[M:N]"` or `"encoder[M:]"` (a slice of the backbone's own numbering, as
            `encoder_layers`); a layer name or name prefix, or a list of them
            (`["block1", "block2"]`); or a predicate `layer -> bool`.
        up_to: instead of `spec`: the encoder up to and including this block (`"block4"`,
            `"conv4"` or 4).
        encoder_layers: instead of `spec`: N or `slice(M, N)`, the layers that
            `keras.applications.<Backbone>(include_top=False).layers[:N]` (or `[M:N]`) are in
            this model, its input at 0; layers the model cut off (after the bottleneck source)
            are skipped. Whole numbers >= 0 only.

    Returns:
        The selected layers in model order. Raises ValueError if nothing matches.

    Example:
        >>> from vggunet import build_unet, build_vgg_unet
        >>> model = build_unet(input_size=(32, 32, 3), n_filters=2)
        >>> [layer.name for layer in select_layers(model, up_to=1)]
        ['encoder_block1_conv1', 'encoder_block1_conv2', 'encoder_block1_pool']
        >>> vgg = build_vgg_unet(input_shape=(64, 64, 3), weights=None,
        ...                      decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8)
        >>> [layer.name for layer in select_layers(vgg, encoder_layers=slice(2, 5))]
        ['block1_conv2', 'block1_pool', 'block2_conv1']
        >>> select_layers(vgg, "encoder[2:5]") == select_layers(vgg, encoder_layers=slice(2, 5))
        True
    """
    given = [value is not None for value in (spec, up_to, encoder_layers)]
    if sum(given) != 1:
        raise ArgumentError("Give exactly one of spec, up_to or encoder_layers (e.g. "
                            "freeze(model, 'encoder'), freeze(model, up_to='block4') or "
                            "freeze(model, encoder_layers=10)).")
    if encoder_layers is not None:
        chosen = backbone_range(model, as_slice(encoder_layers),
                                f"encoder_layers={encoder_layers!r}")
    elif up_to is not None:
        chosen = _select_up_to(model, up_to)
    else:
        chosen = _select_by_spec(model, spec)
    if not chosen:
        raise ArgumentError(f"freeze spec {spec if up_to is None else up_to!r} matches no layer "
                            f"of model {model.name!r}.")
    return chosen


def _example_prefixes(model: keras.Model) -> list[str]:
    seen = []
    for layer in model.layers:
        prefix = layer.name.split("_")[0]
        if prefix not in seen:
            seen.append(prefix)
    return seen[:8]


def _nested(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Layers nested in `layer` (a backbone stage built as a model of its own)."""
    return nested_layers(layer) if isinstance(layer, keras.Model) else []


def _set_trainable(
    model: keras.Model, chosen: list, trainable: bool, train_bn: bool, action: str
) -> FreezeReport:
    roles = layer_roles(model)
    changed, kept = [], []
    for layer in chosen:
        target = trainable
        # Keras's rule for every family: encoder BatchNorm stays frozen, i.e. in inference
        # mode. LayerNormalization (ConvNeXt) has no moving statistics and needs no such rule.
        keep_bn = trainable and not train_bn and roles[layer.name] in ENCODER_ROLES
        if keep_bn and isinstance(layer, layers.BatchNormalization):
            target = False
            kept.append(layer.name)
        if layer.trainable != target:
            changed.append(layer.name)
        layer.trainable = target
        # Keras passes `trainable` on to nested layers only when the model's own flag changes.
        for inner in _nested(layer):
            inner.trainable = target
            if keep_bn and isinstance(inner, layers.BatchNormalization):
                inner.trainable = False
                kept.append(f"{layer.name}/{inner.name}")
    totals = param_totals(model)
    trainable_layers = sum(1 for l in model.layers if l.trainable and l.weights)
    frozen_layers = sum(1 for l in model.layers if not l.trainable and l.weights)
    return FreezeReport(action, tuple(changed), tuple(kept), trainable_layers, frozen_layers,
                        totals["trainable"], totals["frozen"])


def freeze(
    model: keras.Model, spec: FreezeSpec = None, *, up_to: str | int | None = None,
    encoder_layers: EncoderLayers = None, train_bn: bool = False,
) -> FreezeReport:
    """Sets `trainable=False` on the layers a spec selects (see `select_layers`).

    Frozen BatchNorm layers run in inference mode. `train_bn` is accepted for symmetry with
    `unfreeze` and has no effect here.

    Args:
        model: the model to change in place.
        spec: which layers (int, role, `"encoder[:N]"`, names/prefixes, predicate).
        up_to: the encoder up to and including this block, instead of `spec`.
        encoder_layers: N or `slice(M, N)` in the backbone's own numbering (seed code's
            `VGG16(...).layers[:N]`), instead of `spec`.
        train_bn: unused by freeze.

    Returns:
        A `FreezeReport`; recompile the model before training.

    Example:
        >>> from vggunet import build_vgg_unet
        >>> m = build_vgg_unet(input_shape=(64, 64, 3), weights=None)
        >>> freeze(m, encoder_layers=10).changed  # what VGG16(...).layers[:10] are
        ('input_image', 'block1_conv1', 'block1_conv2', 'block1_pool', 'block2_conv1',
         'block2_conv2', 'block2_pool', 'block3_conv1', 'block3_conv2', 'block3_conv3')
        >>> freeze(m, "encoder").frozen_layers
        13
    """
    chosen = select_layers(model, spec, up_to=up_to, encoder_layers=encoder_layers)
    return _set_trainable(model, chosen, False, train_bn, "freeze")


def unfreeze(
    model: keras.Model, spec: FreezeSpec = None, *, up_to: str | int | None = None,
    encoder_layers: EncoderLayers = None, train_bn: bool = False,
) -> FreezeReport:
    """Sets `trainable=True` on the selected layers, keeping encoder BatchNorm frozen by default.

    Args:
        model: the model to change in place.
        spec: which layers (int, role, `"encoder[M:]"`, names/prefixes, predicate).
        up_to: the encoder up to and including this block, instead of `spec`.
        encoder_layers: N or `slice(M, N)` in the backbone's own numbering, instead of `spec`.
        train_bn: also make encoder BatchNormalization layers trainable (they then update
            their statistics in training mode; Keras's guide advises against it).

    Returns:
        A `FreezeReport`; recompile the model before training.

    Example:
        >>> from vggunet import build_vgg_unet, freeze
        >>> m = build_vgg_unet(input_shape=(64, 64, 3), weights=None,
        ...                    decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8)
        >>> _ = freeze(m, "encoder")
        >>> unfreeze(m, top_blocks(m, 1)).changed
        ('block5_conv1', 'block5_conv2', 'block5_conv3')
        >>> encoder_blocks(m)
        [1, 2, 3, 4, 5]
    """
    chosen = select_layers(model, spec, up_to=up_to, encoder_layers=encoder_layers)
    return _set_trainable(model, chosen, True, train_bn, "unfreeze")


def top_blocks(model: keras.Model, n: int = 1) -> Callable[[keras.layers.Layer], bool]:
    """A predicate selecting the encoder's top `n` blocks (e.g. VGG's block5, ResNet's conv5).

    Args:
        model: a vggunet model.
        n: how many blocks from the top.

    Returns:
        A predicate for `freeze`/`unfreeze`.
    """
    blocks = encoder_blocks(model)
    if not 0 < check_int(n, "n") <= len(blocks):
        raise ArgumentError(f"n must be in 1..{len(blocks)} for model {model.name!r}, got {n!r}.")
    wanted = set(blocks[-n:])
    roles = layer_roles(model)
    return lambda layer: (roles.get(layer.name) in ENCODER_ROLES
                          and _stage_of(model, layer.name) in wanted)


def recompile(
    model: keras.Model, learning_rate: float | None = None, **overrides: Any
) -> keras.Model:
    """Compiles `model` again with its current loss, metrics and optimizer settings.

    Needed after changing trainability. The optimizer is rebuilt from its config (its slots
    belong to the old set of trainable variables), optionally with a new learning rate.

    Args:
        model: a compiled model.
        learning_rate: new learning rate for the rebuilt optimizer (None keeps the old one).
        **overrides: other `compile()` arguments to replace (e.g. `jit_compile=False`).

    Returns:
        The same model, compiled.
    """
    config = model.get_compile_config() if getattr(model, "compiled", False) else None
    if not config:
        raise ArgumentError(
            f"model {model.name!r} has not been compiled; call model.compile(...) first."
        )
    optimizer = keras.optimizers.deserialize(config.pop("optimizer"))
    if learning_rate is not None:
        optimizer = optimizer.__class__.from_config(
            {**optimizer.get_config(), "learning_rate": float(learning_rate)}
        )
    loss = keras.losses.deserialize(config["loss"]) if isinstance(config.get("loss"), dict) \
        else config.get("loss")
    kwargs = {
        "optimizer": optimizer,
        "loss": loss,
        "loss_weights": config.get("loss_weights"),
        "metrics": _deserialize_metrics(config.get("metrics")),
        "weighted_metrics": _deserialize_metrics(config.get("weighted_metrics")),
        "run_eagerly": config.get("run_eagerly", False),
        "steps_per_execution": config.get("steps_per_execution", 1),
        "jit_compile": config.get("jit_compile", "auto"),
    }
    kwargs.update(overrides)
    model.compile(**kwargs)
    return model


def _deserialize_metrics(metrics: Any) -> Any:
    if metrics is None:
        return None
    if isinstance(metrics, dict) and "class_name" in metrics:
        return keras.metrics.deserialize(metrics)
    if isinstance(metrics, (list, tuple)):
        return [_deserialize_metrics(m) for m in metrics]
    if isinstance(metrics, dict):
        return {k: _deserialize_metrics(v) for k, v in metrics.items()}
    return metrics
