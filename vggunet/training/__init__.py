"""Training: compile, train, two-phase fine-tuning, resumable run folders, distribution.

Modules: `settings` (the typed settings, their defaults, the resume rule), `resume` (the
rule applied to `state.json`), `api` (`train`, `finetune`, `prepare_phase2`), `compiling`
(`compile_model`), `loop` (the run engine), `callbacks`, `schedules`, `batchnorm`,
`layerwise` (layer-wise learning rates), `recipes` (named bundles of settings), `checkpoint`
(loading for a resume), `state` (state.json, log.csv), `lock` (the run lock), `distribute`.
Names load on first use (PEP 562): importing this package, or its keras-free `settings`
module, does not import Keras.
"""

from vggunet._lazy import lazy_namespace

_EXPORTS = {
    **dict.fromkeys(("AtomicCheckpoint", "BatchNormRecalibration", "NaNGuard"),
                    "vggunet.training.callbacks"),
    **dict.fromkeys(("CosineDecayEpochs", "cosine_lr", "PolyDecayEpochs", "poly_lr",
                     "phase_schedule", "warmup_lr"),
                    "vggunet.training.schedules"),
    **dict.fromkeys(("LayerwiseRates", "apply_layerwise_lr", "layerwise_multipliers",
                     "layerwise_optimizer"), "vggunet.training.layerwise"),
    **dict.fromkeys(("CompileSettings", "DataSettings", "FINETUNE_PHASE1", "FINETUNE_PHASE2",
                     "LR_SCHEDULES", "PhaseSettings", "RunSettings", "TRAIN_PHASE",
                     "VOLUME_COMPILE", "VOLUME_MONITOR", "VolumeDataSettings",
                     "resolve_volume_data_format"),
                    "vggunet.training.settings"),
    **dict.fromkeys(("RECIPES", "Recipe", "get_recipe", "recipe_keywords"),
                    "vggunet.training.recipes"),
    **dict.fromkeys(("STATE_VERSION",), "vggunet.training.state"),
    **dict.fromkeys(("RunLock",), "vggunet.training.lock"),
    **dict.fromkeys(("TrainResult",), "vggunet.training.loop"),
    **dict.fromkeys(("compile_model",), "vggunet.training.compiling"),
    **dict.fromkeys(("recalibrate_batchnorm",), "vggunet.training.batchnorm"),
    **dict.fromkeys(("finetune", "prepare_phase2", "train"), "vggunet.training.api"),
}

__all__ = sorted(set(_EXPORTS) - {"STATE_VERSION"})

__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
