"""Security: safe-mode loading only, nothing pickled or Lambda in what vggunet writes, and no
write outside the output folder."""

from __future__ import annotations

import ast
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import vggunet  # noqa: E402
from conftest import one_block_unet  # noqa: E402
from vggunet.inference import PredictionError, predict_folder  # noqa: E402
from vggunet.inference.folder import _inside  # noqa: E402
from vggunet.saving import UnsafeModelError, load_model, save_model  # noqa: E402
from vggunet.training import train  # noqa: E402

PACKAGE = Path(vggunet.__file__).resolve().parent
KERAS_ARCHIVE_MEMBERS = {"config.json", "metadata.json", "model.weights.h5"}


tiny_unet = one_block_unet


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    """A saved model, a training run (checkpoints), a CLI export and a tiny labelled data set."""
    from vggunet.cli import main

    root = tmp_path_factory.mktemp("security")
    rng = np.random.default_rng(0)
    for i in range(2):
        (root / "data" / "images").mkdir(parents=True, exist_ok=True)
        (root / "data" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(
            root / "data" / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, 2, (32, 32), dtype=np.uint8)).save(
            root / "data" / "masks" / f"{i}.png")
    model = tiny_unet()
    saved = save_model(model, root / "model.keras")
    images = rng.random((2, 32, 32, 3)).astype("float32") * 255
    masks = rng.integers(0, 2, (2, 32, 32)).astype("int32")
    run = root / "run"
    train(model, tf.data.Dataset.from_tensor_slices((images, masks)).batch(2), out_dir=run,
          epochs=1, metrics=("miou",), jit_compile=False, tensorboard=False, verbose=0)
    exported = root / "exported.keras"
    assert main(["export", "--model", str(run / "checkpoints" / "best.keras"),
                 "--out", str(exported)]) == 0
    return {"root": root, "saved": saved, "run": run, "exported": exported,
            "images": images, "masks": masks}


# --------------------------------------------------------------------------- what we write


def written_models(artefacts) -> list[Path]:
    run = artefacts["run"]
    return [artefacts["saved"], run / "checkpoints" / "last.keras",
            run / "checkpoints" / "best.keras", artefacts["exported"]]


def _class_names(config) -> set[str]:
    names = set()
    if isinstance(config, dict):
        if "class_name" in config:
            names.add(str(config["class_name"]))
        for value in config.values():
            names |= _class_names(value)
    elif isinstance(config, list):
        for value in config:
            names |= _class_names(value)
    return names


def test_everything_written_loads_in_safe_mode_without_lambda_or_pickle(artefacts):
    for path in written_models(artefacts):
        with zipfile.ZipFile(path) as archive:
            assert set(archive.namelist()) <= KERAS_ARCHIVE_MEMBERS, (path, archive.namelist())
            config = json.loads(archive.read("config.json"))
            weights = archive.read("model.weights.h5")
        classes = _class_names(config)
        assert "Lambda" not in classes and "__lambda__" not in classes, (path, classes)
        text = json.dumps(config)
        assert "__lambda__" not in text and "__python_function__" not in text
        # Weights are plain numeric arrays: nothing object-typed that could hold a pickle.
        import h5py

        kinds = []
        with h5py.File(io.BytesIO(weights), "r") as handle:
            handle.visititems(lambda name, obj: kinds.append((name, obj.dtype.kind))
                              if isinstance(obj, h5py.Dataset) else None)
        assert kinds and all(kind in "fiub" for _, kind in kinds), (path, kinds)
        # Plain Keras, safe mode on, no custom_objects: it loads and predicts.
        loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
        assert loaded.predict(artefacts["images"][:1], verbose=0).shape == (1, 32, 32, 2)
    state = json.loads((artefacts["run"] / "state.json").read_text())
    assert state["completed_epochs"] == 1  # the run's other files are plain JSON/CSV


def test_lambda_model_is_refused_by_default_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "code_ran"

    def payload(t):
        marker.write_text("the Lambda's Python ran")
        return t * 2

    inputs = keras.Input((4,))
    path = tmp_path / "evil.keras"
    keras.Model(inputs, keras.layers.Lambda(payload, name="payload_layer")(inputs)).save(path)
    marker.unlink()  # building the model called it once; loading must not
    with pytest.raises(UnsafeModelError) as info:
        load_model(path)
    message = str(info.value)
    assert "evil.keras" in message and "Refusing to load" in message
    assert "Lambda layer(s) ['payload_layer']" in message
    assert not marker.exists()
    from vggunet.cli import main

    assert main(["inspect", "--model", str(path)]) == 2
    assert not marker.exists()


def _safe_mode_false_calls(source: str) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "safe_mode" and not (isinstance(kw.value, ast.Constant)
                                                  and kw.value.value is True):
                    # Only vggunet.saving.load_model may forward its own (default True)
                    # parameter; anything else (False, a variable) is flagged.
                    if not (isinstance(kw.value, ast.Name) and kw.value.id == "safe_mode"):
                        lines.append(node.lineno)
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "enable_unsafe_deserialization":
                lines.append(node.lineno)
    return lines


def test_scanner_flags_unsafe_calls():
    assert _safe_mode_false_calls("keras.models.load_model(p, safe_mode=False)") == [1]
    assert _safe_mode_false_calls("x = 1\nload(p, safe_mode=flag)") == [2]
    assert _safe_mode_false_calls("keras.config.enable_unsafe_deserialization()") == [1]
    assert _safe_mode_false_calls("load(p, safe_mode=True)\nload(p, safe_mode=safe_mode)") == []


def test_package_never_turns_safe_mode_off_or_unpickles():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 15
    offenders = {}
    for path in files:
        source = path.read_text(encoding="utf-8")
        found = _safe_mode_false_calls(source)
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "marshal")
                       for n in names):
                    found.append(node.lineno)
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant)
                                                         and kw.value.value is False):
                        found.append(node.lineno)
        if found:
            offenders[str(path.relative_to(PACKAGE))] = found
    assert offenders == {}
    # The public loader's own default is safe.
    import inspect

    assert inspect.signature(load_model).parameters["safe_mode"].default is True


@pytest.fixture()
def recorded_loads(monkeypatch):
    """Records the keyword arguments of every Keras model load."""
    calls: list[dict] = []
    real = keras.saving.load_model

    def recording(filepath, *args, **kwargs):
        calls.append({"path": str(filepath), "args": args, **kwargs})
        return real(filepath, *args, **kwargs)

    monkeypatch.setattr(keras.saving, "load_model", recording)
    monkeypatch.setattr(keras.models, "load_model", recording)
    return calls


def test_every_load_path_keeps_safe_mode_on(recorded_loads, artefacts, tmp_path, capsys):
    from vggunet.cli import main

    root, saved = artefacts["root"], artefacts["saved"]
    load_model(saved, compile=False)
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(tmp_path / "img.png")
    commands = [
        ["inspect", "--model", str(saved)],
        ["predict", "--model", str(saved), "--input", str(tmp_path / "img.png"),
         "--out", str(tmp_path / "pred")],
        ["export", "--model", str(saved), "--out", str(tmp_path / "e.keras")],
        ["evaluate", "--model", str(saved), "--images", str(root / "data" / "images"),
         "--masks", str(root / "data" / "masks"), "--num-classes", "2"],
    ]
    for argv in commands:
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    # Resuming a run loads its checkpoint too.
    result = train(tiny_unet(), tf.data.Dataset.from_tensor_slices(
        (artefacts["images"], artefacts["masks"])).batch(2), out_dir=artefacts["run"],
        epochs=1, resume=True, metrics=("miou",), jit_compile=False, tensorboard=False,
        verbose=0)
    assert result.epochs_completed == 1
    assert (tmp_path / "pred" / "img.png").is_file()
    paths = [c["path"] for c in recorded_loads]
    assert len(recorded_loads) >= 1 + len(commands) + 1, paths
    assert any(p.endswith("last.keras") for p in paths)
    for call in recorded_loads:
        assert call.get("safe_mode", True) is True, call
        assert not any(a is False for a in call["args"]), call  # not passed positionally


# --------------------------------------------------------------------------- output paths


def test_output_names_cannot_escape_the_output_folder(tmp_path):
    out = (tmp_path / "out").resolve()
    out.mkdir()
    assert _inside(out, "a.png") == out / "a.png"
    for name in ("../a.png", "../../etc/passwd", "/tmp/a.png", "sub/../../a.png"):
        with pytest.raises(PredictionError, match="outside"):
            _inside(out, name)


def test_predict_folder_refuses_a_symlink_that_points_outside(tmp_path):
    from vggunet.cli import main

    model = tiny_unet()
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.full((36, 36), 50, np.uint8)).save(inputs / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "a.png").symlink_to(victim)
    with pytest.raises(PredictionError, match="outside"):
        predict_folder(model, inputs, out)
    assert victim.read_text() == "keep me"
    save_model(model, tmp_path / "m.keras")
    assert main(["predict", "--model", str(tmp_path / "m.keras"), "--input", str(inputs),
                 "--out", str(out)]) == 2
    assert victim.read_text() == "keep me"


def test_odd_input_names_stay_inside_the_output_folder(tmp_path):
    model = tiny_unet()
    inputs = tmp_path / "in"
    inputs.mkdir()
    # Stems "." and ".." (files "..png", "...png") must not become "./" or "../" targets.
    for name in ("..png", "...png", "-x.png"):
        Image.fromarray(np.full((36, 36), 50, np.uint8)).save(inputs / name, format="PNG")
    out = tmp_path / "deep" / "out"
    written = predict_folder(model, inputs, out, overlay=False)
    assert {p.name for p in written} == {"-x.png", "..png", "...png"}
    assert all(p.resolve().parent == out.resolve() for p in written)
    assert {p.name for p in out.iterdir()} == {"-x.png", "..png", "...png"}
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]


def _grey_png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 40), value, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("line, needle", [
    ("../outside.png masks/a.png", "contains '..'"),
    ("images/a.png ../outside.png", "contains '..'"),
    ("images/../../outside.png masks/a.png", "contains '..'"),
    ("/etc/passwd masks/a.png", "absolute path '/etc/passwd' refused"),
    ("C:\\\\data\\\\a.png masks/a.png", "absolute path"),
    ("images/link.png masks/a.png", "outside"),
    ("images/a.png", "expected 'image mask'"),
    ("images/missing.png masks/a.png", "file not found"),
])
def test_pairs_list_rejects_paths_that_leave_the_data_folder(tmp_path, line, needle):
    from vggunet.data import DataError, read_pairs_list

    root = tmp_path / "data"
    _grey_png(root / "images" / "a.png")
    _grey_png(root / "masks" / "a.png")
    _grey_png(tmp_path / "outside.png")
    (root / "images" / "link.png").symlink_to(tmp_path / "outside.png")
    (root / "list.txt").write_text(f"# image mask\nimages/a.png masks/a.png\n{line}\n")
    with pytest.raises(DataError) as info:
        read_pairs_list(root / "list.txt")
    message = str(info.value)
    assert "list.txt, line 3" in message and needle in message


def test_pairs_list_reads_pairs_and_drives_the_cli(tmp_path, capsys):
    from vggunet.cli import main
    from vggunet.data import read_pairs_list

    root = tmp_path / "data"
    for stem in ("a", "b"):
        _grey_png(root / "images" / f"{stem}.png", 100)
        _grey_png(root / "masks" / f"{stem}.png", 1)
    (root / "list.txt").write_text("images/a.png, masks/a.png\n\n  images/b.png\tmasks/b.png\n")
    pairs = read_pairs_list(root / "list.txt")
    assert pairs == [(root / "images" / "a.png", root / "masks" / "a.png"),
                     (root / "images" / "b.png", root / "masks" / "b.png")]
    (root / "bad.txt").write_text("images/a.png ../../etc/shadow\n")
    code = main(["train", "--pairs", str(root / "bad.txt"), "--out", str(tmp_path / "run"),
                 "--num-classes", "2", "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "bad.txt, line 1" in err and "'..'" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()
