"""The 3D workflow end to end through the Python API on the shared BraTS patches: the loss falls,
checkpoints resume, scores and the slice view are written, and whole-volume prediction with the
lab's standardisation equals one forward pass when the window covers the volume."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

import vggunet
from vggunet.data import find_volume_cases, load_case, standardize_volume

BRATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats3d" / "train"
# Not the lab's 64×64×16: a quarter of the voxels trains in a third of the time, and the loss
# still falls 14-22 % in five epochs (seeds 1 and 0; the test asserts 10 %).
PATCH = (32, 32, 16)

pytestmark = pytest.mark.slow


def _data(cases, **options):
    return vggunet.make_volume_dataset(cases, patch=PATCH, num_classes=4, batch_size=2,
                                       data_format="channels_last", **options)


def test_train_resume_score_and_draw_on_shared_patches(tmp_path):
    keras.utils.set_random_seed(0)
    cases = find_volume_cases(BRATS)
    assert len(cases) == 20
    train_cases, test_cases = cases[:3], cases[-1:]
    # The same patches every epoch, so the falling loss measures learning, not patch luck.
    train_data = _data(train_cases, seed=0, patches_per_volume=2, resample=False)
    val_data = _data(test_cases, seed=0, augment=False, shuffle=False, resample=False)
    settings = vggunet.VolumeDataSettings(patch=PATCH, seed=0, patches_per_volume=2)
    options = dict(out_dir=tmp_path / "run", loss="soft_dice", monitor="val_dice_coefficient",
                   metrics=["dice_coefficient", "class_dice"], learning_rate=3e-3,
                   data_settings=settings, verbose=0)
    model = vggunet.build_unet_3d((*PATCH, 4), depth=2, base_filters=4,
                                  data_format="channels_last")
    result = vggunet.train(model, train_data, val_data, epochs=5, **options)
    losses = result.history["loss"]
    assert len(losses) == 5 and losses[-1] < 0.9 * losses[0], losses
    assert Path(result.best_checkpoint).is_file()

    resumed = vggunet.train(vggunet.build_unet_3d((*PATCH, 4), depth=2, base_filters=4,
                                                  data_format="channels_last"),
                            train_data, val_data, epochs=6, resume=True, **options)
    assert resumed.epochs_completed == 6 and len(resumed.history["loss"]) == 6
    assert resumed.history["loss"][:5] == pytest.approx(losses)

    out_json = tmp_path / "scores.json"
    scores = vggunet.evaluate_volumes(resumed.model, test_cases, patch=PATCH,
                                      out_json=out_json, verbose=False)
    written = json.loads(out_json.read_text())
    assert [c["name"] for c in written["cases"]] == [test_cases[0].name]
    table = vggunet.format_volume_scores(scores)
    assert all(word in table.lower() for word in ("dice", "sensitivity", "specificity"))

    image, label = load_case(test_cases[0])
    probs = vggunet.predict_volume(resumed.model, image, patch=PATCH, overlap=0.5)
    assert probs.shape == (160, 160, 16, 3) and 0 <= probs.min() <= probs.max() <= 1
    png = vggunet.plot_volume_slices(image, label, vggunet.volume_labels(probs),
                                     path=tmp_path / "slices.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_predict_volume_with_the_lab_standardisation_is_one_forward_pass(data_format):
    """A window the size of the volume: predict_volume = standardise + one model call."""
    image, _ = load_case(find_volume_cases(BRATS)[0])
    crop = image[40:56, 50:66, :8, :]                      # a 16×16×8 corner of a real patch
    shape = (4, 16, 16, 8) if data_format == "channels_first" else (16, 16, 8, 4)
    model = vggunet.build_unet_3d(shape, depth=2, base_filters=2, data_format=data_format)
    expected_input = standardize_volume(crop, "lab")[None]
    if data_format == "channels_first":
        expected_input = np.moveaxis(expected_input, -1, 1)
    expected = model.predict(expected_input, verbose=0)[0]
    if data_format == "channels_first":
        expected = np.moveaxis(expected, 0, -1)
    got = vggunet.predict_volume(model, crop, standardize="lab")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
