"""vggunet.distribute and `strategy=`: resolution, chief rules, MirroredStrategy, multi-worker.

The strategy runs need processes of their own: logical CPU devices and the multi-worker
collective runtime must both be configured before TensorFlow starts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from vggunet import distribute
from vggunet.cli import main as cli_main
from conftest import SHALLOW_FLAGS

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "vggunet" / "sample" / "isbi"


# ------------------------------------------------------------------ resolution and errors


@pytest.mark.parametrize("value", [None, "none", " None "])
def test_no_strategy(value) -> None:
    assert distribute.resolve_strategy(value) is None
    assert distribute.is_chief(None)
    assert distribute.num_replicas(None) == 1
    assert distribute.strategy_name(None) == "none"


@pytest.mark.parametrize("value", ["mirror", "tpu", 3, object()])
def test_unknown_strategy_lists_valid_ones(value) -> None:
    with pytest.raises(ValueError) as info:
        distribute.resolve_strategy(value)
    message = str(info.value)
    assert repr(value) in message
    assert "none" in message and "mirrored" in message and "multiworker" in message


def test_multiworker_without_tf_config(monkeypatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG environment variable.*not set"):
        distribute.resolve_strategy("multiworker")


@pytest.mark.parametrize("config, message", [
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "no 'cluster'"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "no 'task'"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
     "not in its cluster"),
])
def test_bad_tf_config(monkeypatch, config: str, message: str) -> None:
    monkeypatch.setenv("TF_CONFIG", config)
    with pytest.raises(ValueError, match=message):
        distribute.read_tf_config()


def test_data_parallel_needs_jax() -> None:
    with pytest.raises(ValueError, match="JAX backend only.*'tensorflow'"):
        distribute.data_parallel()


def test_model_factory_must_return_a_model() -> None:
    with pytest.raises(ValueError, match="returned int, not a keras.Model"):
        distribute.build_in_scope(lambda: 3, None)
    with pytest.raises(ValueError, match="keras.Model or a function"):
        distribute.build_in_scope("vgg16", None)


def _fake_strategy(cluster: dict, task_type: str, task_id: int) -> SimpleNamespace:
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    return SimpleNamespace(cluster_resolver=resolver)


def test_chief_rules_and_worker_dirs(tmp_path: Path) -> None:
    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert distribute.is_chief(_fake_strategy(workers, "worker", 0))
    assert not distribute.is_chief(_fake_strategy(workers, "worker", 1))
    with_chief = {"chief": ["127.0.0.1:3"], **workers}
    assert distribute.is_chief(_fake_strategy(with_chief, "chief", 0))
    assert not distribute.is_chief(_fake_strategy(with_chief, "worker", 0))

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "state.json").write_text("{}")
    (out / "checkpoints" / "last.keras").write_bytes(b"chief")
    chief = _fake_strategy(workers, "worker", 0)
    assert distribute.worker_dir(out, chief) == out
    other = distribute.worker_dir(out, _fake_strategy(workers, "worker", 1), resume=True)
    try:
        assert other != out and "worker1" in other.name
        # Resuming workers start from the chief's files, so all continue at the same epoch.
        assert (other / "checkpoints" / "last.keras").read_bytes() == b"chief"
        assert (other / "state.json").is_file()
    finally:
        import shutil

        shutil.rmtree(other)


def test_cli_rejects_unknown_strategy(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["train", "--out", "x", "--strategy", "gpu"])
    assert info.value.code == 2
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


def test_cli_multiworker_without_tf_config(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code = cli_main(["finetune", "--data", str(SAMPLE), "--out", str(tmp_path / "run"),
                     "--strategy", "multiworker"])
    assert code == 2
    err = capsys.readouterr().err
    assert "vggunet finetune: error: strategy 'multiworker' needs the TF_CONFIG" in err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ real strategies


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "XLA_FLAGS")}
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


@pytest.mark.slow
def test_mirrored_two_devices_matches_one_device(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_distribute_mirrored.py")),
         str(tmp_path)], cwd=REPO, env=_clean_env(), capture_output=True, text=True,
        timeout=240,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(lines[-1][len("RESULT "):])
    single, mirrored = result["single"], result["mirrored"]
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    assert mirrored["strategy"] == "mirrored"
    assert len(single["batch_losses"]) == len(mirrored["batch_losses"]) == 2
    # Same global batches, same weights: two replicas of half a batch each give the same
    # loss and, after two SGD steps, the same weights as one device.
    assert mirrored["batch_losses"] == pytest.approx(single["batch_losses"], rel=1e-4)
    assert mirrored["epoch_loss"] == pytest.approx(single["epoch_loss"], rel=1e-4)
    assert result["weights_moved"] > 1e-3
    assert result["weight_diff"] < 1e-5
    assert Path(mirrored["last_checkpoint"]).is_file()

    tuned = result["finetune"]
    assert tuned["replicas"] == 2 and tuned["epochs"] == 2
    assert tuned["changed"] and tuned["copied_back"]
    assert Path(tuned["last_checkpoint"]).is_file()


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_multiworker_two_workers_one_checkpoint(tmp_path: Path) -> None:
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = ["-m", "vggunet", "train", "--data", str(SAMPLE), "--mask-format", "binary",
            "--channels", "1", "--num-classes", "2", "--weights", "none", "--crop", "32x32",
            "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2",
            *SHALLOW_FLAGS,
            "--precision", "float32", "--loss", "ce", "--metrics", "accuracy", "--seed", "0",
            "--strategy", "multiworker", "--quiet"]
    procs = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, *args, "--out", str(tmp_path / f"out{index}")], cwd=REPO,
            env=_clean_env(TF_CONFIG=tf_config, TMPDIR=str(scratch)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    deadline = time.monotonic() + 300
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for proc in procs:  # a worker left waiting for its peer is stopped, never left running
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:] + err[-5000:]

    chief, worker = tmp_path / "out0", tmp_path / "out1"
    assert sorted(p.name for p in (chief / "checkpoints").iterdir()) == ["best.keras",
                                                                         "last.keras"]
    state = json.loads((chief / "state.json").read_text())
    assert state["completed_epochs"] == 1
    assert len((chief / "log.csv").read_text().strip().splitlines()) == 2  # header + 1 epoch
    # The other worker trained too (same all-reduced loss) but wrote nothing anywhere.
    assert not worker.exists()
    assert list((tmp_path / "tmp1").iterdir()) == []
    losses = [line for out, _ in outputs for line in out.splitlines()
              if line.startswith("best loss:")]
    assert len(losses) == 2 and losses[0] == losses[1], losses
    assert "not the chief" in outputs[1][0] and "best checkpoint: None" in outputs[1][0]
