"""Plots: PNG files of the expected size, closed figures, the phase boundary on history plots."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

from vggunet.plots import display, plot_history, plot_predictions


@pytest.fixture(scope="module")
def isbi_sample(isbi_dir):
    image = np.asarray(Image.open(isbi_dir / "image" / "0.png").convert("L"), "float32")
    label = (np.asarray(Image.open(isbi_dir / "label" / "0.png").convert("L")) > 127)
    images = np.stack([np.repeat(image[:64, :64, None], 3, -1),
                       np.repeat(image[64:128, :64, None], 3, -1)])
    masks = np.stack([label[:64, :64], label[64:128, :64]]).astype("int32")
    return images, masks


def test_backend_is_agg():
    assert matplotlib.get_backend().lower() == "agg"


def test_display_writes_png(tmp_path, isbi_sample):
    import matplotlib.pyplot as plt

    images, masks = isbi_sample
    probs = np.stack([1 - masks[0], masks[0]], -1).astype("float32")
    path = tmp_path / "display.png"
    fig = display([images[0], masks[0], probs], path=path, dpi=50)
    assert fig is not None and not plt.get_fignums()
    with Image.open(path) as im:
        assert im.size == (15 * 50, 5 * 50)
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "Predicted Mask"


def test_plot_predictions_grid(tmp_path, isbi_sample):
    import matplotlib.pyplot as plt

    images, masks = isbi_sample
    preds = 1 - masks
    path = plot_predictions(images, masks, preds, tmp_path / "grid.png", max_samples=4,
                            dpi=40, panel_size=2.0)
    assert path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.size == (3 * 2 * 40, 2 * 2 * 40)  # 2 samples -> 2 rows
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 0
    assert not plt.get_fignums()


def test_plot_history_with_phase_boundary(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    history = {"loss": [1.0, 0.8, 0.7, 0.6], "val_loss": [1.1, 0.9, 0.8, 0.75],
               "mean_iou": [0.2, 0.3, 0.4, 0.5], "val_mean_iou": [0.2, 0.25, 0.35, 0.4]}
    lines = []
    original = matplotlib.axes.Axes.axvline

    def spy(self, x=0, *args, **kwargs):
        lines.append((x, kwargs.get("label"), kwargs.get("linestyle")))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", spy)
    path = plot_history(history, tmp_path / "history.png", phase_boundaries=[0, 2], dpi=40)
    assert path == tmp_path / "history.png" and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.size == (2 * 5 * 40, int(3.6 * 40))
    # One dashed, labelled boundary per panel (loss, mean_iou), between epochs 2 and 3.
    assert lines == [(2.5, "phase 2 starts", "--")] * 2
    assert not plt.get_fignums()
