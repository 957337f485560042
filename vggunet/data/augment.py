"""Training augmentations: `Augment` chooses, parses and seeds them (``--augment`` specs).

The transforms themselves are stateless TensorFlow ops applied identically to image and mask
(:mod:`vggunet.data.transforms`; the photo ones in :mod:`vggunet.data.photo_augment`); their
names are re-exported here, where earlier releases defined them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import tensorflow as tf

from vggunet.checks import check_number, did_you_mean
from vggunet.data.photo_augment import (
    PHOTO_NAMES, check_photo_fields, colour_step, hflip_step, parse_photo_token, photo_fields,
    scale_step,
)
from vggunet.data.transforms import (
    elastic_deform, random_brightness_contrast, random_flip, random_rot90, random_rotate,
    reflect_index, split_seed,
)
from vggunet.errors import ArgumentError

__all__ = [
    "Augment",
    "elastic_deform",
    "random_flip",
    "random_rot90",
    "random_rotate",
    "random_brightness_contrast",
    "reflect_index",
]

# Defaults used when an augmentation is switched on by name only
# (``Augment.parse("rotate,elastic")``); chosen for ~512 px microscopy tiles.
DEFAULT_ROTATE_DEGREES = 15.0
DEFAULT_ELASTIC_ALPHA = 300.0
DEFAULT_ELASTIC_SIGMA = 10.0
DEFAULT_ELASTIC_PROB = 0.5
DEFAULT_BRIGHTNESS = 0.1
DEFAULT_CONTRAST = 0.2



_NAMES = ("flip", "rot90", "rotate", "elastic", "brightness", "contrast", *PHOTO_NAMES)
_GRAMMAR = ("flip, hflip, rot90, rotate[=DEG], elastic[=ALPHA[:SIGMA[:PROB]]], brightness[=B], "
            "contrast[=C], scale[=MIN:MAX], saturation[=S], hue[=H], jitter")


@dataclass(frozen=True)
class Augment:
    """A switchable set of training augmentations.

    Attributes:
        flip: random horizontal and vertical flips.
        hflip: random left-right flips only (upright photos; see `photo_augment`).
        rot90: random multiples of 90 degrees (0/180 only for non-square tiles).
        rotate_degrees: small-angle rotation range in degrees; 0 = off.
        elastic_alpha: elastic displacement scale in pixels; 0 = off.
        elastic_sigma: elastic field smoothness in pixels.
        elastic_prob: probability that a sample is elastically deformed.
        brightness: brightness jitter as a fraction of 255; 0 = off.
        contrast: contrast jitter (factor in [1-c, 1+c]); 0 = off.
        scale: (min, max) random scale then crop (see `photo_augment`); None = off.
        saturation: saturation factor in [1-s, 1+s], s <= 1; 0 = off.
        hue: hue shift in [-h, h] turns, h <= 0.5; 0 = off.
    """

    flip: bool = False
    rot90: bool = False
    rotate_degrees: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = DEFAULT_ELASTIC_SIGMA
    elastic_prob: float = 1.0
    brightness: float = 0.0
    contrast: float = 0.0
    scale: tuple[float, float] | None = None
    saturation: float = 0.0
    hue: float = 0.0
    hflip: bool = False

    def __post_init__(self) -> None:
        for name in ("rotate_degrees", "elastic_alpha", "elastic_sigma", "brightness",
                     "contrast"):
            check_number(getattr(self, name), f"Augment.{name}", low=0)
        check_number(self.elastic_prob, "Augment.elastic_prob", low=0, high=1)
        if self.contrast >= 1.0:
            raise ArgumentError(f"Augment.contrast must be < 1 (factor 1-c must stay positive), "
                                f"got {self.contrast}")
        check_photo_fields(self)

    @property
    def enabled(self) -> bool:
        """True when at least one augmentation is switched on."""
        return bool(self.flip or self.hflip or self.rot90 or self.rotate_degrees or
                    (self.elastic_alpha and self.elastic_prob) or self.brightness or
                    self.contrast or self.scale or self.saturation or self.hue)

    @classmethod
    def from_flags(cls, *, flip: bool = False, rot90: bool = False,
                   rotate: float | bool = False, elastic: float | bool = False,
                   brightness: float | bool = False, contrast: float | bool = False,
                   elastic_sigma: float = DEFAULT_ELASTIC_SIGMA,
                   elastic_prob: float = DEFAULT_ELASTIC_PROB) -> "Augment":
        """Build from CLI-style flags; ``True`` switches an option on with its default.

        Args:
            flip, rot90: switches.
            rotate: max degrees, or True for the default (15).
            elastic: alpha, or True for the default (300).
            brightness: fraction of 255, or True for the default (0.1).
            contrast: fraction, or True for the default (0.2).
            elastic_sigma: field smoothness in pixels.
            elastic_prob: probability of deforming a sample.

        Returns:
            The Augment.
        """
        def val(x, default):
            if x is True:
                return default
            return float(x or 0.0)

        alpha = val(elastic, DEFAULT_ELASTIC_ALPHA)
        return cls(flip=bool(flip), rot90=bool(rot90),
                   rotate_degrees=val(rotate, DEFAULT_ROTATE_DEGREES),
                   elastic_alpha=alpha, elastic_sigma=float(elastic_sigma),
                   elastic_prob=float(elastic_prob) if alpha else 1.0,
                   brightness=val(brightness, DEFAULT_BRIGHTNESS),
                   contrast=val(contrast, DEFAULT_CONTRAST))

    @classmethod
    def parse(cls, spec: str | None) -> "Augment":
        """Parse a comma-separated spec such as ``"flip,rot90,elastic=300:10:0.5"``.

        Names: those of `_GRAMMAR` (``scale``, ``hflip``, ``saturation``, ``hue``, ``jitter``:
        see `photo_augment`); ``""``/``"none"`` switches all off.

        Args:
            spec: the string.

        Returns:
            The Augment.

        Raises:
            ArgumentError: unknown name or malformed value (the message lists valid names).
        """
        if spec is None or spec.strip().lower() in ("", "none", "off"):
            return cls()
        kw: dict = {}
        for token in spec.split(","):
            token = token.strip()
            if not token:
                continue
            name, _, value = token.partition("=")
            name = name.strip().lower()
            if name not in _NAMES:
                raise ArgumentError(f"unknown augmentation {name!r} in {spec!r}; valid names: "
                                    f"{_GRAMMAR}.{did_you_mean(name, _NAMES)}")
            try:
                if name in ("flip", "rot90"):
                    if value:
                        raise ArgumentError(f"{name} takes no value")
                    kw[name] = True
                elif name == "elastic":
                    parts = [float(p) for p in value.split(":")] if value else []
                    if len(parts) > 3:
                        raise ArgumentError("at most ALPHA:SIGMA:PROB")
                    kw["elastic"] = parts[0] if parts else True
                    if len(parts) > 1:
                        kw["elastic_sigma"] = parts[1]
                    if len(parts) > 2:
                        kw["elastic_prob"] = parts[2]
                elif name in PHOTO_NAMES:
                    kw.update(parse_photo_token(name, value))
                else:
                    kw[name] = float(value) if value else True
            except ValueError as exc:
                raise ArgumentError(f"bad value in augmentation {token!r} of {spec!r}: "
                                    f"{exc}") from None
        photo = photo_fields(kw)  # takes the photo flags out of kw
        return replace(cls.from_flags(**kw), **photo)

    def describe(self) -> str:
        """Short human-readable summary, e.g. for logs."""
        on = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
              if getattr(self, f.name) != f.default]
        return "Augment(" + ", ".join(on) + ")"

    def apply(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, *,
              crop: Sequence[int] | None = None,
              ignore_index: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """Apply the enabled augmentations to one (image, mask) pair.

        Args:
            image: float32 (H, W, C) in the raw range [0, 255].
            mask: int32 (H, W) class indices.
            seed: shape-(2,) int tensor; same seed, same output.
            crop, ignore_index: ``scale``'s output (H, W) (None: the input's) and mask padding.

        Returns:
            (image, mask), geometric transforms applied identically to both.
        """
        image = tf.convert_to_tensor(image, tf.float32)
        mask = tf.convert_to_tensor(mask, tf.int32)
        s = split_seed(seed, 6)
        image, mask = scale_step(self, image, mask, seed, crop, ignore_index)  # sets the size
        if self.flip:
            image, mask = random_flip(image, mask, s[0])
        image, mask = hflip_step(self, image, mask, seed)
        if self.rot90:
            image, mask = random_rot90(image, mask, s[1])
        if self.rotate_degrees:
            image, mask = random_rotate(image, mask, self.rotate_degrees, s[2])
        if self.elastic_alpha and self.elastic_prob:
            if self.elastic_prob >= 1.0:
                image, mask = elastic_deform(image, mask, self.elastic_alpha,
                                             self.elastic_sigma, s[3])
            else:
                u = tf.random.stateless_uniform([], seed=s[4])
                image, mask = tf.cond(
                    u < self.elastic_prob,
                    lambda: elastic_deform(image, mask, self.elastic_alpha,
                                           self.elastic_sigma, s[3]),
                    lambda: (image, mask))
        if self.brightness or self.contrast:
            image = random_brightness_contrast(image, self.brightness, self.contrast, s[5])
        return colour_step(self, image, seed), mask
