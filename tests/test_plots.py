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


def test_writing_plots_leaves_the_users_backend_and_pyplot_alone(tmp_path):
    """A notebook's backend must survive `import vggunet.plots` and writing figures."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "import matplotlib\n"
        "matplotlib.use('svg')  # stands for a user's own choice, e.g. a notebook's inline one\n"
        "import numpy as np\n"
        "import vggunet.plots as P\n"
        f"P.plot_history({{'loss': [1.0, 0.5]}}, {str(tmp_path / 'h.png')!r}, dpi=20)\n"
        "P.plot_predictions(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8), int),\n"
        f"                  np.ones((1, 8, 8, 2)), {str(tmp_path / 'g.png')!r}, dpi=20)\n"
        "P.display([np.zeros((8, 8, 3)), np.zeros((8, 8), int)],\n"
        f"          path={str(tmp_path / 'd.png')!r})\n"
        "print(json.dumps([matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == ["svg", False]
    for name in ("h.png", "g.png", "d.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 0


def test_display_without_a_path_is_a_pyplot_figure_to_show(isbi_sample):
    import matplotlib.pyplot as plt

    images, masks = isbi_sample
    fig = display([images[0], masks[0]])
    try:
        assert plt.get_fignums() == [fig.number]
        assert [ax.get_title() for ax in fig.axes] == ["Input Image", "True Mask"]
    finally:
        plt.close(fig)


def test_probabilities_are_reduced_with_the_one_labels_rule(tmp_path):
    from vggunet.plots import _mask_for_display

    probs = np.array([[[0.2, 0.8], [0.6, 0.4]]], "float32")            # (1, 2, K=2)
    np.testing.assert_array_equal(_mask_for_display(probs), [[1, 0]])
    sigmoid = np.array([[[0.3], [0.7]]], "float32")                     # one channel: > 0.5
    np.testing.assert_array_equal(_mask_for_display(sigmoid), [[0, 1]])
    labels = np.array([[[0.0], [2.0]]], "float32")                      # whole numbers: labels
    np.testing.assert_array_equal(_mask_for_display(labels), [[0, 2]])
