"""The model classes vggunet's builders return: Functional models that record their layer roles.

`SegmentationModel` (the U-Nets) and `Encoder` (`build_encoder`'s feature extractor) are
Functional models in every respect (same layers, weights, `fit`, `predict`, export), plus:

* `roles`: `{layer_name: role}` for every layer (`input`, `encoder`, `skip`, `bottleneck`,
  `decoder`, `head`), recorded by the builder and stored in the model's config, so it survives
  `.keras` save/load, `from_config` copies and safe-mode loading;
* outputs named after the layers they come from: `[t.name for t in model.outputs]` reads
  `["block1_conv2", ...]`, not `["keras_tensor_3", ...]`, also after loading;
* `backbone_layers`: the backbone's own layer numbering, `[name of layer 0, name of layer 1,
  ...]` in the order of `keras.applications.<Backbone>(include_top=False).layers` (entry 0, the
  backbone's input, is the model's input), so that seed code such as `VGG16(...).layers[:10]`
  and weights files written for the plain backbone map onto the model one-to-one;
* `min_input_size`: the smallest H and W the backbone takes (32 px for VGG), which
  `predict_proba` pads smaller images up to.

This follows keras-hub's Backbone/Task pattern with public API only: a subclass of `keras.Model`
whose `__init__` takes the Functional signature `(inputs, outputs, name=None, **kwargs)`, so
Keras rebuilds it from its config as a Functional model and hands the extra config entry
(`roles`) back to `__init__`. Copies that rebuild the graph without the config
(`keras.models.clone_model`) infer the roles from layer names and the graph instead
(`vggunet.models.roles.infer_roles`), which gives the builders' roles again.

The registered names `vggunet>SegmentationModel` and `vggunet>Encoder` are part of the `.keras`
file format: never rename these classes.
"""

from __future__ import annotations

import types
from typing import Any, Mapping

import keras

from vggunet._serializables import PACKAGE
from vggunet.errors import ArgumentError
from vggunet.models.roles import ROLES, assign_roles, infer_roles, layer_names_of


class _RecordedModel(keras.Model):
    """A Functional model with a record of layer roles and outputs named after their layers.

    Args:
        inputs: input tensor(s), as for `keras.Model(inputs, outputs)`.
        outputs: output tensor(s).
        name: model name.
        **kwargs: the record, given by the builder (and by Keras, from the config, on load):
            `roles` (`{layer_name: role}`) and/or `skips` (the skip tensors, turned into
            roles here and not kept). Layers without a given role get the one their name says
            (`vggunet.models.roles.role_of_name`); entries for layers the model does not
            contain are dropped, so a builder may describe a whole backbone of which the model
            keeps a part. With neither, the roles are inferred from names and the graph. The
            other keyword arguments are those of a Functional model (`trainable`).
    """

    def __init__(self, inputs: Any, outputs: Any, name: str | None = None,
                 **kwargs: Any) -> None:
        # `roles` travels in **kwargs: an explicit parameter would change the signature that
        # Keras checks (`inputs, outputs, name`) before it revives a subclass as Functional.
        roles, skips = kwargs.pop("roles", None), kwargs.pop("skips", None)
        backbone_layers = kwargs.pop("backbone_layers", None)
        stages = kwargs.pop("stages", None) or {}
        min_input_size = kwargs.pop("min_input_size", None)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        # Keras names output tensors keras_tensor_N; the producing layer's name says more.
        for tensor, layer_name in zip(self.outputs, self.output_names):
            tensor.name = layer_name
        # A read-only mapping: Keras's attribute tracking leaves it alone, and users cannot
        # change the record by accident.
        self._roles = types.MappingProxyType(self._record(roles, skips))
        present = {layer.name for layer in self.layers}
        self._backbone_layers = tuple(
            name for name in (backbone_layers or ()) if name in present)
        self._stages = types.MappingProxyType(
            {name: int(stage) for name, stage in stages.items() if name in present})
        self._min_input_size = None if min_input_size is None else int(min_input_size)

    def _infer_roles(self) -> dict[str, str]:
        return infer_roles(self)

    def _record(self, roles: Mapping[str, str] | None, skips: Any) -> dict[str, str]:
        if roles is None and skips is None:
            return self._infer_roles()
        present = {layer.name for layer in self.layers}
        known = {name: role for name, role in (roles or {}).items() if name in present}
        wrong = {name: role for name, role in known.items() if role not in ROLES}
        if wrong:
            raise ArgumentError(f"roles must be among {ROLES}; got {wrong} for model "
                                f"{self.name!r}.")
        return assign_roles(self, layer_names_of(self, skips or ()), known)

    @property
    def roles(self) -> dict[str, str]:
        """`{layer_name: role}` for every layer, in `model.layers` order."""
        return dict(self._roles)

    @property
    def backbone_layers(self) -> list[str]:
        """Layer names in the backbone's own numbering (empty when the model has no backbone).

        Entry `i` is the layer that `keras.applications.<Backbone>(include_top=False).layers[i]`
        is in this model; entry 0 is the model's input. Backbone layers that the encoder cut off
        (beyond the bottleneck source) are not in the model and end the list.
        """
        return list(self._backbone_layers)

    @property
    def stages(self) -> dict[str, int]:
        """`{layer_name: stage}` for the backbone's layers (empty when not recorded)."""
        return dict(self._stages)

    @property
    def min_input_size(self) -> int | None:
        """The smallest height and width the model takes (None when not recorded).

        The backbone's minimum (`EncoderSpec.min_input_size`): 32 px for VGG, ResNet and
        the other backbones that pool five times, more for valid-padding ones (Xception 71).
        `predict_proba` pads smaller images up to it.
        """
        return self._min_input_size

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "roles": dict(self._roles)}
        if self._backbone_layers:
            config["backbone_layers"] = list(self._backbone_layers)
        if self._stages:
            config["stages"] = dict(self._stages)
        if self._min_input_size is not None:
            config["min_input_size"] = self._min_input_size
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SegmentationModel(_RecordedModel):
    """A segmentation network (the U-Nets) with its layer roles recorded at build time.

    Args:
        inputs: input tensor(s).
        outputs: output tensor(s).
        name: model name.
        **kwargs: the record (`roles`, `skips`) and Functional keyword arguments (see
            `_RecordedModel`).

    Example:
        >>> inputs = keras.Input((8, 8, 3), name="input_image")
        >>> x = keras.layers.Conv2D(4, 3, padding="same", name="block1_conv1")(inputs)
        >>> x = keras.layers.Conv2D(2, 1, name="head_conv")(x)
        >>> model = SegmentationModel(inputs, x, name="tiny")
        >>> model.roles
        {'input_image': 'input', 'block1_conv1': 'encoder', 'head_conv': 'head'}
        >>> [t.name for t in model.outputs]
        ['head_conv']
        >>> SegmentationModel.from_config(model.get_config()).roles == model.roles
        True
    """


@keras.saving.register_keras_serializable(package=PACKAGE)
class Encoder(_RecordedModel):
    """A truncated backbone whose outputs are its skip tensors and its bottleneck source.

    Every output but the last is a skip connection, so a copy made without the record
    (`keras.models.clone_model`) still knows its skip layers.

    Args:
        inputs: input tensor(s).
        outputs: `[*skip_tensors, bottleneck_source_tensor]`.
        name: model name.
        **kwargs: the record (`roles`, `skips`) and Functional keyword arguments.
    """

    def _infer_roles(self) -> dict[str, str]:
        return assign_roles(self, layer_names_of(self, self.outputs[:-1]))
