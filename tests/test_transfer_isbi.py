"""The ISBI transfer benchmark's bookkeeping (`benchmarks/transfer_isbi.py`, issue 5).

Training runs take minutes, so they are not run here; what is checked is what decides which run
is which: the command line → configuration, the run folders, the results table and the
BENCHMARKS.md update that must keep the prose around the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import transfer_isbi as T  # noqa: E402


def _cfg(*argv: str, name: str = "hed_finetune_long") -> dict:
    return T.resolve_config(name, T.build_parser().parse_args(list(argv)))


def test_resolve_config_carries_loss_tag_unfreeze_and_long_budget():
    cfg = _cfg("--loss", "ce", "--tag", "ce_only", "--unfreeze", "encoder", "--long-steps",
               "600", "--long-crop", "256", "--lr-finetune", "3e-4", "--decoder-filters",
               "256,128,64,32,16")
    assert cfg["loss"] == "ce" and cfg["tag"] == "ce_only" and cfg["unfreeze"] == "encoder"
    assert cfg["steps"] == 600 and cfg["crop"] == 256
    assert cfg["lr"] == 1e-3 and cfg["lr2"] == 3e-4
    assert cfg["decoder_filters"] == (256, 128, 64, 32, 16)
    assert cfg["augment"] == T.NO_ELASTIC_AUGMENT  # the long config trains without elastic


def test_resolve_config_defaults_and_lab_model_overrides():
    cfg = _cfg(name="hed_finetune")
    assert cfg["loss"] == "ce+dice" and cfg["tag"] == "" and cfg["steps"] == 300
    lab = _cfg("--skip-batchnorm", "1", "--recalibrate-bn", "8", name="unet_scratch")
    # The lab model has no BatchNorm and takes the float32 policy whatever the flags say.
    assert lab["decoder_batchnorm"] is False and lab["skip_batchnorm"] is False
    assert lab["recalibrate_bn"] is None and lab["precision"] == "float32"
    assert lab["lr"] == 1e-3


def test_unknown_loss_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        T.build_parser().parse_args(["--loss", "hinge"])
    assert "--loss" in capsys.readouterr().err


def test_tagged_runs_get_their_own_folder(tmp_path):
    plain, tagged = _cfg(), _cfg("--tag", "s_ce")
    assert T.run_dir(plain, 0, tmp_path) == tmp_path / "hed_finetune_long_seed0"
    assert T.run_dir(tagged, 0, tmp_path) == tmp_path / "hed_finetune_long_seed0" / "s_ce"
    assert T.run_dir(tagged, 1, tmp_path) != T.run_dir(tagged, 0, tmp_path)


def _row(**extra):
    scores = {"pixel_error": 0.0844, "membrane_dice": 0.786, "cell_dice": 0.947,
              "membrane_iou": 0.648, "cell_iou": 0.9, "mean_iou": 0.774}
    row = {"config": "hed_finetune_long", "label": "3. long budget", "seed": 0,
           "model": "build_vgg_unet('vgg16')", "weights": "HED (BSDS500)",
           "decoder_batchnorm": True, "skip_batchnorm": True, "bn_momentum": 0.9,
           "recalibrate_bn": 8, "decoder_filters": [256, 128, 64, 32, 16], "lr": 1e-3,
           "lr2": 3e-4, "lr_decay_last": 0.12, "crop": 256, "batch": 4,
           "phases": "200 frozen + 1500 with top2 unfrozen", "augment": "flip,rot90",
           "precision": "auto", "plain": scores, "tta": dict(scores, pixel_error=0.0784),
           "train_wall_s": 2504.0, "s_per_step": 1.47, "load_start": [1.8], "load_end": [1.6],
           "curve": [{"step": 100, "train_wall_s": 126.0, "pixel_error": 0.0994,
                      "membrane_dice": 0.76, "mean_iou": 0.748, "loss": 0.733}]}
    row.update(extra)
    return row


def test_render_table_names_loss_tag_and_curve():
    table = T.render_table({"runs": {
        "a": _row(),  # a row from before --loss: CE + Dice
        "b": _row(loss="ce", tag="ce_only", seed=1,
                  plain=dict(_row()["plain"], pixel_error=0.0712)),
    }})
    rows = [line for line in table.splitlines() if line.startswith("| `hed_finetune_long`")]
    assert len(rows) == 2
    assert "loss CE+Dice" in rows[0] and "| 0.0844 |" in rows[0] and "| 0.0784 |" in rows[0]
    assert "ce_only" in rows[1] and "loss CE |" in rows[1] and "| 0.0712 |" in rows[1]
    assert "×0.1 for the last 12% of epochs" in rows[0]
    assert "decoder 256,128,64,32,16" in rows[0]
    assert "Held-out learning curve of `hed_finetune_long` ce_only (seed 1" in table
    assert "| 100 | 2.1 | 0.0994 | 0.760 | 0.748 | 0.733 |" in table


def test_update_benchmarks_md_replaces_only_the_marked_table(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\n{T.SECTION}\n\nprose before\n\n{T.TABLE_BEGIN}\nold table\n"
                  f"{T.TABLE_END}\n\nprose after\n\n## Next section\n\nkept\n")
    T.update_benchmarks_md("| new | table |", md)
    text = md.read_text()
    assert "old table" not in text and "| new | table |" in text
    assert text.index("prose before") < text.index("| new | table |") < text.index("prose after")
    assert text.endswith("## Next section\n\nkept\n")
    assert not list(tmp_path.glob("*.tmp"))


def test_held_out_arrays_scale_like_training_and_keep_the_two_classes():
    if not T.DEFAULT_DATA.is_dir():
        pytest.skip(f"ISBI data not found at {T.DEFAULT_DATA}")
    _, held_out = T._split(T.DEFAULT_DATA)
    raw, masks = T.held_out_arrays(held_out[:2], "raw")
    unit, _ = T.held_out_arrays(held_out[:2], "unit")
    assert raw.shape == (2, 512, 512, 1) and masks.shape == (2, 512, 512)
    assert raw.max() > 1.0 and abs(float(unit.max()) - float(raw.max()) / 255.0) < 1e-6
    assert set(map(int, set(masks.ravel().tolist()))) == {0, 1}
