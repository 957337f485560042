"""The package's shape: a lazy public API, old import paths, the error family, registration.

What a user of the previous release relies on must keep working after the reorganisation:
every name of the old `vggunet.__all__`, every old module path with its public names, and
`keras.saving.load_model` of vggunet files after `import vggunet`, whatever the import order.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vggunet
from vggunet import errors

# `vggunet.__all__` of main 86619a9, the last release with flat modules.
OLD_ALL = [
    "BackbonePreprocess", "BatchNormRecalibration", "CosineDecayEpochs", "CropToReference",
    "DataError", "ENCODERS", "EncoderSpec", "ExportError", "FreezeReport",
    "ImagenetWeightsUnavailable", "LayerRow", "PadToMultiple", "PredictionError", "TrainResult",
    "UnsafeModelError", "ModelFileError", "WeightsError", "build_encoder", "build_encoder_unet",
    "build_unet", "build_unet_3d", "build_vgg_unet", "compile_model", "conv_block", "cosine_lr",
    "create_mask", "decoder_stage", "display", "encoder_blocks", "evaluate", "export_model",
    "finetune", "recalibrate_batchnorm", "format_layers", "freeze", "get_encoder_spec",
    "layer_roles", "layer_table", "load_backbone_weights", "load_model", "make_dataset",
    "plot_history", "plot_predictions", "predict_folder", "predict_mask", "predict_proba",
    "predict_tiled", "print_layers", "recompile", "resolve_precision", "save_model",
    "select_layers", "top_blocks", "train", "unfreeze", "upsampling_block",
]

# Old flat modules and public names they exported (a sample of each, as imported by users,
# tests, benchmarks and notebooks of the previous release).
OLD_MODULES = {
    "vggunet.augment": ["Augment", "random_flip", "random_rot90", "reflect_index"],
    "vggunet.blocks": ["conv_block", "decoder_stage", "upsampling_block"],
    "vggunet.cli": ["build_parser", "main", "make_datasets", "parse_size", "positive_int"],
    "vggunet.data": ["DataError", "find_pairs", "load_image", "load_mask", "load_split",
                     "make_dataset", "read_pairs_list", "validate_pairs", "discover_layout"],
    "vggunet.demo": ["SAMPLE_DIR", "build_demo_model", "make_sample", "run_demo"],
    "vggunet.distribute": ["data_parallel", "is_chief", "num_replicas", "resolve_strategy",
                           "strategy_name"],
    "vggunet.encoders": ["ENCODERS", "EncoderSpec", "build_encoder", "encoder_layer_names",
                         "get_encoder_spec"],
    "vggunet.evaluate": ["evaluate", "output_is_logits", "write_json_atomic"],
    "vggunet.export": ["ExportError", "export_model", "float32_copy"],
    "vggunet.freezing": ["FreezeReport", "freeze", "recompile", "top_blocks", "unfreeze"],
    "vggunet.inspect": ["LayerRow", "all_layers", "format_layers", "layer_roles",
                        "layer_table", "param_totals", "print_layers"],
    "vggunet.layers": ["BackbonePreprocess", "CropToReference", "PadToMultiple"],
    "vggunet.losses": ["CombinedLoss", "DiceLoss", "FocalLoss", "JaccardLoss",
                       "SparseCategoricalCrossentropy", "get_loss", "LOSS_NAMES"],
    "vggunet.metrics": ["DiceScore", "MeanIoU", "PerClassIoU", "PixelAccuracy",
                        "confusion_matrix", "get_metrics", "scores_from_confusion"],
    "vggunet.plots": ["display", "plot_history", "plot_predictions"],
    "vggunet.precision": ["cpu_has_bfloat16", "dtype_policy", "resolve_precision"],
    "vggunet.predict": ["PredictionError", "OutputError", "colorize", "create_mask",
                        "predict_folder", "predict_mask", "predict_proba", "predict_tiled",
                        "read_image", "save_mask_png", "save_overlay", "IMAGE_SUFFIXES"],
    "vggunet.saving": ["ModelFileError", "UnsafeModelError", "load_model", "save_model"],
    "vggunet.training": ["TrainResult", "compile_model", "cosine_lr", "finetune",
                         "prepare_phase2", "recalibrate_batchnorm", "train"],
    "vggunet.unet": ["build_encoder_unet", "build_unet", "build_vgg_unet"],
    "vggunet.unet3d": ["build_unet_3d"],
    "vggunet.weights": ["ImagenetWeightsUnavailable", "WeightsError", "keras_cache_dir",
                        "load_backbone_weights", "read_weights_file"],
}

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_every_old_public_name_is_still_exported():
    missing = [name for name in OLD_ALL if name not in vggunet.__all__]
    assert not missing
    for name in vggunet.__all__:
        assert getattr(vggunet, name) is not None, name
    assert set(dir(vggunet)) >= set(vggunet.__all__)


@pytest.mark.parametrize("module", sorted(OLD_MODULES))
def test_old_module_paths_keep_their_names(module):
    loaded = importlib.import_module(module)
    missing = [name for name in OLD_MODULES[module] if not hasattr(loaded, name)]
    assert not missing, f"{module} lost {missing}"


def test_every_top_level_module_is_an_attribute_of_the_package():
    # `vggunet.plots_confusion.plot_confusion_matrix(...)` works after a bare `import vggunet`.
    root = Path(vggunet.__file__).parent
    names = {p.stem for p in root.glob("*.py") if not p.stem.startswith("_")}
    names |= {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    assert names - vggunet._SUBMODULES == set()
    assert callable(vggunet.plots_confusion.plot_confusion_matrix)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'build_vgg_unett'"):
        vggunet.build_vgg_unett  # noqa: B018


def test_import_vggunet_loads_no_tensorflow_keras_or_matplotlib():
    loaded = json.loads(_run(
        "import json, sys, vggunet, vggunet.errors, vggunet.checks, vggunet.models.registry\n"
        "vggunet.__all__; vggunet.__version__; vggunet.ENCODERS\n"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'keras', 'matplotlib', 'jax', "
        "'torch') if m in sys.modules)))"
    ))
    assert loaded == []


IMPORT_ORDERS = [
    "import vggunet; import keras",
    "import keras; import vggunet",
    "import vggunet.losses",
    "import vggunet.metrics",
    "from vggunet.models.precision import resolve_precision",
    "from vggunet.transfer import freeze",
    "import vggunet; vggunet.build_unet",
]

# Runs every order of argv[1] (a JSON list) in a child forked from an interpreter that has
# imported TensorFlow but neither Keras nor vggunet. The registration under test hooks only the
# imports of `keras` and `vggunet.*`; TensorFlow is what makes a fresh interpreter cost 8-10 s
# of CPU, and its import has the same effect whether Keras's import triggers it (a fresh
# interpreter) or it comes first. TensorFlow's `__init__` preloads `keras.src.optimizers` if it
# can (an ImportError is skipped), so Keras is made unimportable while TensorFlow loads: each
# child then starts with no `keras*` or `vggunet*` module and no vggunet import hook, and
# imports Keras itself, as a fresh interpreter does; the child says so (`fresh`).
FORKED_ORDERS = r"""
import importlib.abc, importlib.machinery, json, os, sys


class NoKeras(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name != "keras":
            return None
        real = importlib.machinery.PathFinder.find_spec(name, path)
        return importlib.machinery.ModuleSpec(name, self, origin=real and real.origin)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("keras is left to each import order")


blocker = NoKeras()
sys.meta_path.insert(0, blocker)
import tensorflow  # noqa: F401
sys.meta_path.remove(blocker)
NAMES = json.loads(sys.argv[2])
results = {}
for order in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 1
        try:
            fresh = not any(m == "keras" or m.startswith(("keras.", "vggunet"))
                            for m in sys.modules) and not any(
                type(f).__module__.startswith("vggunet") or f is blocker for f in sys.meta_path)
            scope = {"NAMES": NAMES, "__name__": "__main__"}
            exec(f"{order}\nimport keras\n"
                 "found = [keras.saving.get_registered_object(n) is not None for n in NAMES]",
                 scope)
            os.write(write, json.dumps({"fresh": fresh, "found": scope["found"]}).encode())
            code = 0
        except BaseException as exc:
            os.write(write, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        reply = json.loads(pipe.read() or b"{}")
    _, status = os.waitpid(pid, 0)
    results[order] = {**reply, "exit": os.waitstatus_to_exitcode(status)}
print(json.dumps(results))
"""

REGISTERED = ["vggunet>PadToMultiple", "vggunet>BackbonePreprocess", "vggunet>CropToReference",
              "vggunet>MeanIoU", "vggunet>DiceLoss", "vggunet>CombinedLoss"]


@pytest.fixture(scope="module")
def registered_after_each_order() -> dict:
    """What each import order registered, each in a child interpreter with no Keras yet."""
    done = subprocess.run([sys.executable, "-c", FORKED_ORDERS, json.dumps(IMPORT_ORDERS),
                           json.dumps(REGISTERED)], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("order", IMPORT_ORDERS)
def test_keras_knows_vggunet_classes_whatever_the_import_order(order,
                                                              registered_after_each_order):
    result = registered_after_each_order[order]
    assert result["exit"] == 0 and result["fresh"] is True, result
    assert result["found"] == [True] * len(REGISTERED)


def test_error_family():
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(issubclass(c, errors.VggUnetError) for c in classes)
    # Each still derives from the built-in class it derived from before the family existed.
    before = {"DataError": ValueError, "WeightsError": ValueError, "ModelFileError": ValueError,
              "UnsafeModelError": ValueError, "PredictionError": ValueError,
              "ExportError": ValueError, "CliError": ValueError, "ArgumentError": ValueError,
              "ImagenetWeightsUnavailable": OSError, "OutputError": (ValueError, OSError),
              "CheckpointError": OSError, "WriteError": OSError}
    for name, bases in before.items():
        for base in bases if isinstance(bases, tuple) else (bases,):
            assert issubclass(getattr(errors, name), base), (name, base)
    # The classes users import from their old homes are the same objects.
    from vggunet.data import DataError
    from vggunet.predict import OutputError, PredictionError
    from vggunet.weights import ImagenetWeightsUnavailable, WeightsError

    assert (DataError, PredictionError, OutputError, WeightsError,
            ImagenetWeightsUnavailable) == (errors.DataError, errors.PredictionError,
                                            errors.OutputError, errors.WeightsError,
                                            errors.ImagenetWeightsUnavailable)


def test_no_bare_builtin_errors_raised_by_the_package():
    """Every error vggunet raises on purpose is a VggUnetError (ValueError/OSError subclasses)."""
    import ast
    from pathlib import Path

    bare = []
    for path in Path(vggunet.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) \
                    and isinstance(node.exc.func, ast.Name) \
                    and node.exc.func.id in ("ValueError", "OSError", "KeyError",
                                             "FileNotFoundError", "RuntimeError", "IOError"):
                bare.append(f"{path.name}:{node.lineno} {node.exc.func.id}")
    assert not bare, bare


def test_public_functions_of_new_shared_modules_are_documented():
    from vggunet import checks, console, fileio

    for module in (checks, console, fileio, errors):
        for name, obj in vars(module).items():
            if not name.startswith("_") and inspect.isfunction(obj) \
                    and obj.__module__ == module.__name__:
                assert "Args:" in (inspect.getdoc(obj) or ""), f"{module.__name__}.{name}"


def test_functions_named_like_their_module_stay_callable():
    """`vggunet.evaluate` is a module and a function: importing the module (compile_model does)
    binds the package attribute to it, which must still call the function."""
    import vggunet
    import vggunet.training.compiling  # noqa: F401  imports vggunet.evaluate
    from vggunet.evaluate import evaluate

    assert callable(vggunet.evaluate) and vggunet.evaluate.evaluate is evaluate
    import vggunet.volume_evaluation  # noqa: F401

    assert vggunet.evaluate_volumes is vggunet.volume_evaluation.evaluate_volumes
