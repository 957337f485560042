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

import isbi_scoring as S  # noqa: E402
import transfer_isbi as T  # noqa: E402
import transfer_report as R  # noqa: E402
import transfer_run as TR  # noqa: E402


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
    assert TR.run_dir(plain, 0, tmp_path) == tmp_path / "hed_finetune_long_seed0"
    assert TR.run_dir(tagged, 0, tmp_path) == tmp_path / "hed_finetune_long_seed0" / "s_ce"
    assert TR.run_dir(tagged, 1, tmp_path) != TR.run_dir(tagged, 0, tmp_path)


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
    table = R.render_table({"runs": {
        "a": _row(),  # a row from before --loss: CE + Dice
        "b": _row(loss="ce", tag="ce_only", seed=1,
                  plain=dict(_row()["plain"], pixel_error=0.0712)),
    }}, T.CONFIGS)
    rows = [line for line in table.splitlines() if line.startswith("| `hed_finetune_long`")]
    assert len(rows) == 2
    assert "loss CE+Dice" in rows[0] and "| 0.0844 |" in rows[0] and "| 0.0784 |" in rows[0]
    assert "ce_only" in rows[1] and "loss CE |" in rows[1] and "| 0.0712 |" in rows[1]
    assert "×0.1 for the last 12% of epochs" in rows[0]
    assert "decoder 256,128,64,32,16" in rows[0]
    assert "Held-out learning curve of `hed_finetune_long` ce_only (seed 1" in table
    assert "| 100 | 2.1 | 0.0994 | 0.760 | 0.748 | 0.733 |" in table


def test_render_table_orders_rows_by_configuration_then_seed():
    runs = {"a": _row(config="unet_scratch", seed=1), "b": _row(config="hed_frozen", seed=1),
            "c": _row(config="unet_scratch", seed=0), "d": _row(config="not_listed", seed=0)}
    rows = [line.split("`")[1] + f" {line.split('|')[7].strip()}"
            for line in R.render_table({"runs": runs}, T.CONFIGS).splitlines()[2:6]]
    assert rows == ["hed_frozen 1", "unet_scratch 0", "unet_scratch 1", "not_listed 0"]


def test_update_benchmarks_md_replaces_only_the_marked_table(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\n{R.SECTION}\n\nprose before\n\n{R.TABLE_BEGIN}\nold table\n"
                  f"{R.TABLE_END}\n\nprose after\n\n## Next section\n\nkept\n")
    R.update_benchmarks_md("| new | table |", md)
    text = md.read_text()
    assert "old table" not in text and "| new | table |" in text
    assert text.index("prose before") < text.index("| new | table |") < text.index("prose after")
    assert text.endswith("## Next section\n\nkept\n")
    assert not list(tmp_path.glob("*.tmp"))


def test_held_out_arrays_scale_like_training_and_keep_the_two_classes():
    if not T.DEFAULT_DATA.is_dir():
        pytest.skip(f"ISBI data not found at {T.DEFAULT_DATA}")
    _, held_out = T._split(T.DEFAULT_DATA)
    raw, masks = S.held_out_arrays(held_out[:2], "raw")
    unit, _ = S.held_out_arrays(held_out[:2], "unit")
    assert raw.shape == (2, 512, 512, 1) and masks.shape == (2, 512, 512)
    assert raw.max() > 1.0 and abs(float(unit.max()) - float(raw.max()) / 255.0) < 1e-6
    assert set(map(int, set(masks.ravel().tolist()))) == {0, 1}


def test_schedule_flags_resolve_and_step_decay_applies_to_the_last_epochs():
    cfg = _cfg("--lr-schedule", "cosine", "--lr-finetune", "3e-4", "--mirror-pad", "64")
    assert cfg["lr_schedule"] == "cosine" and cfg["mirror_pad"] == 64
    assert _cfg()["lr_schedule"] == "constant" and _cfg()["mirror_pad"] == 0
    step = _cfg("--lr-decay-last", "0.17", "--lr-finetune", "3e-4")
    rates = [TR.step_decay_lr(step, e, epochs=12, lr=3e-4) for e in range(12)]
    assert rates[:10] == [3e-4] * 10 and rates[10:] == pytest.approx([3e-5, 3e-5])
    with pytest.raises(SystemExit):
        T.build_parser().parse_args(["--lr-schedule", "linear"])


def test_render_table_shows_cosine_and_mirror_padded_scores():
    mirror = dict(_row()["plain"], pixel_error=0.0701)
    row = _row(lr_schedule="cosine", mirror_pad=64, mirror=mirror,
               tta_mirror=dict(mirror, pixel_error=0.0688), tag="cos")
    table = R.render_table({"runs": {"a": row, "b": _row(seed=1)}}, T.CONFIGS)
    lines = [line for line in table.splitlines() if line.startswith("| `hed_finetune_long`")]
    assert "cosine decay over the phase" in lines[0] and "×0.1" not in lines[0]
    assert "| 64 px: 0.0701 (0.0688) |" in lines[0]
    assert "| – | 2504 s" in lines[1]  # a row without mirror-padded scores
    header = table.splitlines()[0]
    assert header.count("|") == lines[0].count("|") == lines[1].count("|")


def test_result_keys_tell_tags_and_momentum_apart():
    args = T.build_parser().parse_args(["--tag", "cos"])
    assert T.result_key("hed_finetune_long", 1, args) == "hed_finetune_long@seed1@bnm0.9@cos"
    args = T.build_parser().parse_args(["--bn-momentum", "0.99"])
    assert T.result_key("hed_finetune", 0, args) == "hed_finetune@seed0@bnm0.99"


def test_rescore_without_a_checkpoint_reports_and_fails(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert T.main(["--rescore", "--configs", "hed_finetune_long", "--tag", "gone",
                   "--mirror-pad", "32", "--out", str(out)]) == 1
    assert "no results row or no" in capsys.readouterr().out


def test_error_breakdown_locates_edge_and_border_errors():
    import numpy as np

    masks = np.ones((1, 64, 64), np.int32)
    masks[0, :, 30:34] = 0  # a 4-px membrane: class edges in columns 29, 30, 33 and 34
    pred = masks.copy()
    pred[0, 40:50, 29] = 0  # 10 errors on the class edge, 16+ px from the image border
    pred[0, 0:2, 5:10] = 0  # 10 errors off the edges, inside the 8-px border band
    e = S.error_breakdown(masks, pred, border=8)
    assert e["edge_share"] == pytest.approx(4 / 64)
    assert e["edge_error"] == pytest.approx(10 / (4 * 64), abs=1e-5)
    assert e["off_edge_error"] == pytest.approx(10 / (60 * 64), abs=1e-5)
    assert e["edge_error_share"] == 0.5
    interior = 48 * 48
    assert e["border_share"] == pytest.approx(1 - interior / 64 ** 2, abs=1e-5)
    assert e["interior_error"] == pytest.approx(10 / interior, abs=1e-5)
    assert e["border_error"] == pytest.approx(10 / (64 ** 2 - interior), abs=1e-5)


def test_render_table_lists_where_the_errors_sit():
    errors = {"edge_share": 0.155, "edge_error": 0.318, "off_edge_error": 0.0313,
              "edge_error_share": 0.65, "border_px": 32, "border_share": 0.234,
              "border_error": 0.0822, "interior_error": 0.0738}
    table = R.render_table({"runs": {"a": _row(errors=errors, tag="cos")}}, T.CONFIGS)
    assert "| `hed_finetune_long` cos seed 0 | 15.5% | 0.318 / 0.0313 | 65% | " \
           "0.0822 / 0.0738 (32 px) |" in table
