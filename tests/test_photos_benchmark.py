"""The photo benchmark's bookkeeping (`benchmarks/photos.py`, issue 17): which run is which.

Training runs take many minutes, so none runs here; checked: each run's settings come from the
"photos" recipe, an ablation removes exactly its ingredient, the split and the epoch plan.
"""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import photos as P  # noqa: E402
import photos_runs as R  # noqa: E402
import pytest  # noqa: E402

from vggunet.training.recipes import recipe_keywords  # noqa: E402


def test_runs_are_the_recipe_the_defaults_or_one_ingredient_less():
    recipe = R.run_config("recipe")
    assert recipe == {t: recipe_keywords("photos", t) for t in ("finetune", "data", "model")}
    assert R.run_config("defaults") == {"finetune": {}, "data": {}, "model": {}}
    for ingredient, changes in R.ABLATIONS.items():
        ablated = R.run_config(f"recipe-minus-{ingredient}")
        changed = {(target, key) for target in recipe for key in
                   {*recipe[target], *ablated[target]}
                   if recipe[target].get(key) != ablated[target].get(key)}
        expected = {(target, key) for target, change in zip(("finetune", "data", "model"),
                                                             changes) for key in change}
        assert changed == expected and changed, ingredient
    lovasz = R.run_config("recipe-lovasz")
    assert lovasz["finetune"]["loss"] == "lovasz" and lovasz["data"]["sample_weights"] is None
    assert lovasz["data"]["max_weight"] is None and lovasz["model"] == recipe["model"]
    per_step = R.run_config("recipe-per-step")
    assert per_step == {**recipe, "finetune": {**recipe["finetune"], "lr_per_step": True}}
    assert recipe["data"]["sample_weights"] == "inverse_sqrt_frequency"  # untouched
    assert R.run_config("recipe-minus-flip")["data"]["augment"] == "scale=0.5:2,jitter"


def test_a_run_without_step_times_says_how_to_calibrate(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "RESULTS", tmp_path)
    with pytest.raises(SystemExit, match=r"--calibrate --run recipe-ohem.*idle"):
        R.read_calibration("recipe-ohem")
    R.merge_record(tmp_path / "photos_calibration.json", "recipe-ohem", {"step_seconds": [1, 2]})
    R.merge_record(tmp_path / "photos_calibration.json", "defaults", {"step_seconds": [3, 4]})
    assert R.read_calibration("recipe-ohem")["step_seconds"] == [1, 2]  # kept by the merge
    assert R.read_calibration("defaults")["step_seconds"] == [3, 4]
    # A run that costs what the recipe does trains the recipe's steps.
    R.merge_record(tmp_path / "photos_calibration.json", "recipe", {"step_seconds": [5, 6]})
    assert R.read_calibration("recipe-per-step")["step_seconds"] == [5, 6]


@pytest.mark.skipif(not P.DATA.is_dir(), reason="the CCP photos are not here")
def test_split_is_sorted_and_fixed_and_the_budget_fills_both_phases():
    train, held = P.split_pairs(None)
    assert (len(train), len(held)) == (804, 200)
    assert Path(train[0][0]).name == "0001.jpg" and Path(held[0][0]).name == "0805.jpg"
    assert Path(held[-1][1]).name == "1004.png"
    assert P.split_pairs(3)[1] == held[:3]
    # 40 min: 10 for phase 1 at 2 s x 50 steps = 6 epochs; 30 at 3 s x 50 = 12 epochs.
    assert R.plan_epochs(40, [2.0, 3.0], 50) == [6, 12]
    assert R.plan_epochs(1, [60.0, 60.0], 50) == [1, 1]


def test_a_budget_other_than_the_runs_default_gets_its_own_key():
    # The recipe's 15-min ablation reference must neither overwrite nor resume its 40-min run.
    assert R.record_key("recipe", 1, R.default_minutes("recipe")) == "recipe/seed1"
    assert R.record_key("recipe", 0, 15.0) == "recipe/seed0/15min"
    assert R.record_key("recipe-minus-poly", 0, 15.0) == "recipe-minus-poly/seed0"
    assert R.record_key("defaults", 2, 7.5) == "defaults/seed2/7.5min"
    assert R.record_key("recipe", 0, 15.0, "float32") == "recipe/seed0/15min/float32"
    assert R.split_key("recipe/seed0/15min/float32") == ("recipe", 0)
    # The recipe trained for another run's steps keeps the recipe's own record.
    key = R.record_key("recipe", 0, 15.0, "float32", steps_as="recipe-minus-jitter")
    assert key == "recipe/seed0/15min/float32/steps-as-recipe-minus-jitter"
    assert R.record_key("recipe", 0, 15.0, steps_as="recipe") == "recipe/seed0/15min"
    assert R.split_key(key) == ("recipe", 0)


def test_report_tables_of_the_results_file(tmp_path, capsys):
    import photos_report

    held = {"mean_iou": 0.25, "pixel_accuracy": 0.81, "rare_pred_over_true_all": 1.3,
            "top10_iou": {"null": 0.9, "skin": 0.4},
            "rare_pred_over_true": {"belt": 0.0, "bag": 2.5, "hat": 1.2}}
    record = {"minutes": 40, "steps_done": [100, 225], "train_wall_s": 2700.0,
              "load_before": [2.0, 1.0, 1.0], "held_out": held}
    path = tmp_path / "photos.json"
    path.write_text(json.dumps({"defaults/seed0": record, "recipe/seed1": record,
                                "recipe/seed0/15min": {**record, "minutes": 15}}))
    assert photos_report.main(["--results", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| recipe | 1 | 40 | ? | 100 + 225 | 45.0 | 2.0 | 0.250 | 0.810 | 1.30 |" in out
    assert "| recipe | 0 | 15 | ? | 100 + 225 |" in out
    assert "| class | defaults/seed0 | recipe/seed1 |" in out and "| skin | 0.400 | 0.400 |" in out
    assert "| defaults/seed0 | 3 | 1.20 | 1 (bag) | 1 |" in out
    with pytest.raises(SystemExit, match="not in .*recipe/seed7"):
        photos_report.main(["--results", str(path), "--runs", "recipe/seed7"])
    capsys.readouterr()
    ablated = {**record, "minutes": 15, "held_out": {**held, "mean_iou": 0.2}}
    path.write_text(json.dumps({"recipe/seed0": record, "recipe/seed0/15min": {
        **record, "minutes": 15}, "recipe-minus-scale/seed0": ablated,
        "recipe/seed1/15min": {**ablated, "held_out": {**held, "mean_iou": 0.24}}}))
    assert photos_report.main(["--results", str(path), "--ablations", "recipe/seed0/15min"]) == 0
    rows = capsys.readouterr().out.splitlines()
    # Records from before the policy was recorded say "?" (and share the reference's).
    tail = "| 0.810 | 1.30 |"
    assert rows[2:] == [f"| recipe | ? | 100 + 225 | 0.250 | — | — {tail}",
                        f"| recipe (seed 1) | ? | 100 + 225 | 0.240 | -0.010 | 100 + 225 {tail}",
                        f"| minus scale | ? | 100 + 225 | 0.200 | -0.050 | 100 + 225 {tail}"]
    with pytest.raises(SystemExit, match="no reference run 'recipe/seed3/15min'"):
        photos_report.main(["--results", str(path), "--ablations", "recipe/seed3/15min"])


def test_docstring_examples_of_the_bookkeeping_hold():
    import photos_report

    for module in (R, photos_report):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_a_finished_run_is_read_back_for_scoring(tmp_path):

    from conftest import one_block_unet
    from vggunet import save_model

    out = tmp_path / "run"
    save_model(one_block_unet(), out / "checkpoints" / "last.keras")
    phases = [{"phase": 1, "start_epoch": 0, "end_epoch": 2},
              {"phase": 2, "start_epoch": 2, "end_epoch": 5}]
    state = {"finished": True, "completed_epochs": 5, "stopped_reason": "completed",
             "phases": phases}
    (out / "state.json").write_text(json.dumps(state))
    log = tmp_path / "run.log"
    log.write_text("Epoch 1/2\n25/25 - 463s - 19s/step - loss: 2.5\nEpoch 2/2\n"
                   "25/25 - 363s - 15s/step - loss: 2.2\nPhase 2 ...\n"
                   + "".join(f"25/25 - {s}s - 20s/step - loss: 2.0\n" for s in (500, 600.5, 700)))
    model, trained = P.finished_training(out, log, 25)
    assert model.output_shape[-1] == 2
    assert trained["steps_done"] == [50, 75] and trained["epochs_completed"] == 5
    assert trained["phase_seconds"] == [826.0, 1800.5] and trained["train_wall_s"] == 2626.5
    assert "run.log" in trained["scored_later"]
    (out / "state.json").write_text(json.dumps({**state, "finished": False}))
    with pytest.raises(SystemExit, match="did not finish"):
        P.finished_training(out, log, 25)
    (out / "state.json").write_text(json.dumps(state))
    log.write_text("25/25 - 463s - x\n")
    with pytest.raises(SystemExit, match="1 epoch lines for 5 epochs"):
        P.finished_training(out, log, 25)


def test_steps_as_trains_another_runs_steps_under_its_own_key(tmp_path, monkeypatch):
    seen = {}

    def fake_run_once(run, seed, minutes, limit, steps_per_epoch, precision, train_log=None,
                      steps_as=None):
        seen.update(run=run, steps_as=steps_as, precision=precision)
        return {"held_out": {"mean_iou": 0.1, "pixel_accuracy": 0.5,
                             "rare_pred_over_true_all": 0.2}}

    monkeypatch.setattr(P, "run_once", fake_run_once)
    monkeypatch.setattr(P, "RESULTS", tmp_path)
    assert P.main(["--run", "recipe", "--minutes", "15", "--precision", "float32",
                   "--steps-as", "recipe-minus-cap"]) == 0
    assert seen == {"run": "recipe", "steps_as": "recipe-minus-cap", "precision": "float32"}
    records = json.loads((tmp_path / "photos.json").read_text())
    assert list(records) == ["recipe/seed0/15min/float32/steps-as-recipe-minus-cap"]
    with pytest.raises(SystemExit):
        P.main(["--run", "recipe", "--steps-as", "recipe-minus-nothing"])
