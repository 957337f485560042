"""Named recipes: documented bundles of training settings, one source for the API and the CLI.

A recipe is a set of keyword overrides of the settings dataclasses of
`vggunet.training.settings` (`CompileSettings`, `RunSettings`, `DataSettings`, the phases'
`PhaseSettings`) plus the builder keywords of `build_vgg_unet` that go with them. It changes no
default: `finetune(..., recipe="photos")`, `train(..., recipe=...)` and `--recipe` fill in the
recipe's value for every setting the caller left alone, and whatever the caller gives explicitly
wins (`recipe_keywords`).

* `"em"`: what the ISBI 2012 work found for grey electron-microscopy images with two classes
  (README, "Fine-tuning guide"; BENCHMARKS.md, the transfer-learning sections): BatchNorm on the
  decoder and the skips, flips and 90° turns, median-frequency class weights, cross-entropy
  (it beat CE + Dice on pixel error in every measured pair), the whole encoder unfrozen in phase
  2 at 3e-4, BatchNorm statistics re-estimated on 8 batches.
* `"photos"`: the field's usual choices for natural multi-class photos (DeepLab/PSPNet-style
  fine-tuning): random scale 0.5-2 with padding by the ignore label, left-right flips and
  colour jitter, inverse-square-root class weights capped at 10, cross-entropy, polynomial
  decay after one warm-up epoch, the whole encoder unfrozen with layer-wise rates, BatchNorm
  on the decoder and the skips. Measured on the CCP photos (`benchmarks/photos.py`,
  BENCHMARKS.md): at 40 minutes of a 2-core CPU, held-out mIoU 0.048 and 0.051 (two seeds)
  against 0.015 for the defaults; the values are the field's, not tuned here. Of the 15-min
  ablations run so far (BENCHMARKS.md), decoder-side BatchNorm is essential and scale
  augmentation costs mIoU at that budget (not yet measured at 40 min).

Recipes set no epochs and no crop or resize: those follow the data and the time budget.
Keras-free, so the CLI builds `--recipe` from it.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Mapping

from vggunet.checks import check_choice

__all__ = ["RECIPES", "RECIPE_TARGETS", "Recipe", "get_recipe", "recipe_keywords"]


def _frozen(values: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(values or {}))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One named recipe: keyword overrides of the settings dataclasses, by dataclass.

    Attributes:
        summary: one line saying when to use it.
        compile: `CompileSettings` fields.
        run: `RunSettings` fields.
        data: `DataSettings` fields (the keywords of `make_dataset` of the same names).
        phase1: `PhaseSettings` fields of `finetune`'s phase 1 (epochs, learning_rate).
        phase2: `PhaseSettings` fields of `finetune`'s phase 2.
        train: `PhaseSettings` fields of `train`'s one phase.
        model: `build_vgg_unet` keywords (`decoder_batchnorm`, `skip_batchnorm`, ...).
    """

    summary: str
    compile: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    run: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    phase1: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    phase2: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    train: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    model: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read-only views, so no caller can change the one source of a recipe's values.
        for field in dataclasses.fields(self):
            if field.name != "summary":
                object.__setattr__(self, field.name, _frozen(getattr(self, field.name)))


_NORMALISED_FEATURES = {"decoder_batchnorm": True, "skip_batchnorm": True}

RECIPES: Mapping[str, Recipe] = MappingProxyType({
    "em": Recipe(
        summary="grey microscopy (EM) images, few classes, far from the pretraining photos",
        compile={"loss": "ce"},
        run={"recalibrate_bn": 8},
        data={"augment": "flip,rot90", "sample_weights": "median_frequency"},
        phase1={"learning_rate": 1e-3},
        phase2={"learning_rate": 3e-4, "unfreeze": "encoder"},
        train={"learning_rate": 1e-4},
        model=_NORMALISED_FEATURES,
    ),
    "photos": Recipe(
        summary="natural colour photos with many, imbalanced classes (street scenes, clothing)",
        compile={"loss": "ce", "ignore_index": 255},
        data={"augment": "hflip,scale=0.5:2,jitter", "sample_weights": "inverse_sqrt_frequency",
              "max_weight": 10.0},
        phase1={"learning_rate": 1e-3},
        phase2={"learning_rate": 3e-4, "unfreeze": "encoder", "lr_schedule": "poly",
                "warmup_epochs": 1, "layerwise_lr": 0.5},
        train={"lr_schedule": "poly", "warmup_epochs": 1, "layerwise_lr": 0.5},
        model=_NORMALISED_FEATURES,
    ),
})
"""The recipes by name. Why each value (see the module docstring and README's guide):
photos' `layerwise_lr=0.5` compounds per stage, so VGG16's lowest of five stages trains at
1/16 of the rate (0.1 would leave it at 1/10,000, i.e. frozen); `ignore_index=255` is the
label that `scale` pads with (a data set with its own void label gives `ignore_index`
explicitly, which wins)."""

RECIPE_TARGETS = ("finetune", "train", "data", "model")
"""What `recipe_keywords` can return keywords for."""

# PhaseSettings field -> the keyword of finetune's phase 1 / phase 2 (train's are the fields).
_PHASE1_KEYWORDS = {"epochs": "phase1_epochs", "learning_rate": "phase1_lr"}
_PHASE2_KEYWORDS = {"epochs": "phase2_epochs", "learning_rate": "phase2_lr"}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`.

    Args:
        name: one of `RECIPES` ("em", "photos").

    Returns:
        The `Recipe`.

    Raises:
        ArgumentError: an unknown name, with the valid ones and the closest.

    Example:
        >>> get_recipe("photos").phase2["lr_schedule"]
        'poly'
        >>> get_recipe("photo")
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: recipe must be one of ('em', 'photos'), got 'photo'. Did
        you mean 'photos'?
    """
    return RECIPES[check_choice(name, tuple(RECIPES), "recipe")]


def recipe_keywords(name: str, target: str) -> dict[str, Any]:
    """The keywords recipe `name` gives `target`, named as `target` names them.

    Args:
        name: a recipe name.
        target: "finetune" or "train" (their keywords: phase settings, compile and run
            fields), "data" (`DataSettings` fields = `make_dataset` keywords) or "model"
            (`build_vgg_unet` keywords).

    Returns:
        keyword -> value (a fresh dict).

    Example:
        >>> recipe_keywords("em", "finetune")["phase2_lr"]
        0.0003
        >>> recipe_keywords("photos", "model")
        {'decoder_batchnorm': True, 'skip_batchnorm': True}
    """
    recipe = get_recipe(name)
    target = check_choice(target, RECIPE_TARGETS, "target")
    if target in ("data", "model"):
        return dict(getattr(recipe, target))
    keywords = {**recipe.compile, **recipe.run}
    if target == "train":
        return {**keywords, **recipe.train}
    keywords.update({_PHASE1_KEYWORDS[k]: v for k, v in recipe.phase1.items()})
    keywords.update({_PHASE2_KEYWORDS.get(k, k): v for k, v in recipe.phase2.items()})
    return keywords
