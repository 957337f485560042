"""Faults: SIGKILL during training and checkpoint writes, NaN losses, and determinism.

The kill test drives `tests/_kill_driver.py`, a fork server that imports TensorFlow once and
forks one real training process per attempt, so ten kill/resume cycles fit in about a
minute. The NaN stop is covered by
`tests/test_training.py::test_nan_stops_and_keeps_finite_checkpoint` (training stops with a
message, `stopped_reason == "nan"`, and `last.keras` keeps the last finite weights).
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
DRIVER = TESTS / "_kill_driver.py"

# Kill attempts in one run: the issue asks for at least 10; the first 6 cover every kind.
KILLS = 10
EPOCHS = 8              # epochs of the whole run
STEPS = 3               # batches per epoch
KINDS = ("batch", "timer", "CKPT_PARTIAL", "CKPT_RENAME", "CKPT_RENAMED", "batch")
SEED = int(os.environ.get("VGGUNET_KILL_SEED", "2012"))
TRIGGER_TIMEOUT_S = 120.0


class ForkServer:
    """The driver process: `start(cfg)` forks a training child, `wait()` reaps it."""

    def __init__(self, log: Path) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   PYTHONUNBUFFERED="1")
        self._stderr = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, str(DRIVER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     env=env)
        assert self._read() == {"ready": True}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"kill driver died (exit {self.proc.poll()}); see its log")
        return json.loads(line)

    def start(self, cfg: dict) -> int:
        self.proc.stdin.write(json.dumps(cfg) + "\n")
        self.proc.stdin.flush()
        return int(self._read()["pid"])

    def wait(self) -> int:
        return int(self._read()["status"])

    def close(self) -> None:
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def read_markers(path: Path) -> list[list[str]]:
    """Marker lines as token lists (the trailing `t=...` timestamp dropped)."""
    if not path.is_file():
        return []
    return [[t for t in line.split() if not t.startswith("t=")]
            for line in path.read_text().splitlines() if line.strip()]


def wait_for(path: Path, predicate, pid: int) -> list[list[str]]:
    """Polls the markers file until `predicate(lines)`; fails on an early finish or error."""
    deadline = time.monotonic() + TRIGGER_TIMEOUT_S
    while time.monotonic() < deadline:
        lines = read_markers(path)
        if predicate(lines):
            return lines
        bad = [ln for ln in lines if ln[0] in ("FINISHED", "ERROR", "NOT_KILLED")]
        if bad:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"child reached {bad[0]} before the kill point: {lines}")
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"kill point not reached within {TRIGGER_TIMEOUT_S} s: "
                         f"{read_markers(path)}")


def epochs_of(lines: list[list[str]], marker: str) -> list[int]:
    return [int(ln[1]) for ln in lines if ln[0] == marker]


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory):
    server = ForkServer(tmp_path_factory.mktemp("driver") / "driver.log")
    yield server
    server.close()


def test_sigkill_mid_epoch_and_mid_checkpoint_then_resume(fork_server, isbi_dir, tmp_path):
    from vggunet.saving import load_model

    rng = random.Random(SEED)
    out = tmp_path / "run"
    state_path = out / "state.json"
    last = out / "checkpoints" / "last.keras"
    best = out / "checkpoints" / "best.keras"
    base = {"out": str(out), "epochs": EPOCHS, "steps": STEPS, "data": str(isbi_dir),
            "seed": 0, "log": str(tmp_path / "children.log")}
    completed = 0
    attempted = survived = redone = 0
    by_kind: dict[str, int] = {}
    began_total = 0
    started = time.perf_counter()
    for attempt in range(KILLS):
        kind = KINDS[attempt % len(KINDS)]
        epoch = min(completed + rng.randint(0, 1), EPOCHS - 1)
        if kind == "timer" and epoch >= EPOCHS - 2:
            kind = "batch"  # a timer on the last epoch could fire after the run has ended
        markers = tmp_path / f"markers_{attempt:02d}.txt"
        hold = [kind, epoch] if kind.startswith("CKPT") else None
        pid = fork_server.start({**base, "markers": str(markers), "hold": hold})
        if kind == "batch":
            batch = rng.randrange(STEPS)
            wait_for(markers, lambda ls: ["BATCH", str(epoch), str(batch)] in ls, pid)
        elif kind == "timer":
            wait_for(markers, lambda ls: ["EPOCH_BEGIN", str(epoch)] in ls, pid)
            time.sleep(rng.uniform(0.0, 0.25))  # anywhere in the epoch, checkpoint included
        else:
            wait_for(markers, lambda ls: [kind, str(epoch)] in ls, pid)
        os.kill(pid, signal.SIGKILL)
        status = fork_server.wait()
        attempted += 1
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
            f"attempt {attempt} ({kind}) was not killed: status {status}, "
            f"{read_markers(markers)}")

        lines = read_markers(markers)
        began = epochs_of(lines, "EPOCH_BEGIN")
        done = epochs_of(lines, "EPOCH_DONE")
        began_total += len(began)
        # The child resumed exactly where state.json said the previous one had got to.
        assert began and began[0] == completed, (attempt, kind, completed, lines)
        state = json.loads(state_path.read_text()) if state_path.is_file() else None
        now = int(state["completed_epochs"]) if state else 0
        assert now >= completed and now <= EPOCHS
        assert now >= (max(done) + 1 if done else 0), (attempt, kind, now, lines)
        # At most the unfinished epoch is lost: everything before the last begun one counts.
        assert now >= began[-1], (attempt, kind, now, lines)
        redone += began[-1] + 1 - now
        if state:
            # Never a corrupt latest checkpoint: it loads, optimizer state included, and is at
            # least as far along as state.json says.
            model = load_model(last, compile=True)
            assert int(model.optimizer.iterations.numpy()) >= now * STEPS
            assert all(np.all(np.isfinite(w)) for w in model.get_weights())
            load_model(best, compile=False)
        completed = now
        survived += 1
        by_kind[kind] = by_kind.get(kind, 0) + 1

    # A last, undisturbed resume finishes the run.
    markers = tmp_path / "markers_final.txt"
    pid = fork_server.start({**base, "markers": str(markers), "hold": None})
    status = fork_server.wait()
    lines = read_markers(markers)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, lines
    began = epochs_of(lines, "EPOCH_BEGIN")
    assert began == list(range(completed, EPOCHS)), (completed, lines)
    began_total += len(began)
    assert ["FINISHED", str(EPOCHS), "completed"] in lines
    state = json.loads(state_path.read_text())
    assert state["completed_epochs"] == EPOCHS and state["finished"] is True
    rows = list(csv.DictReader(open(out / "log.csv", newline="")))
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    model = load_model(last, compile=True)
    assert int(model.optimizer.iterations.numpy()) >= EPOCHS * STEPS
    leftovers = sorted(p.name for p in (out / "checkpoints").iterdir()
                       if p.name not in ("last.keras", "best.keras"))
    assert leftovers == [], f"temp files left after resume: {leftovers}"
    assert began_total - EPOCHS == redone <= attempted

    summary = {"kills_attempted": attempted, "kills_survived": survived, "by_kind": by_kind,
               "epochs": EPOCHS, "epochs_redone": redone, "seed": SEED,
               "wall_s": round(time.perf_counter() - started, 1)}
    (tmp_path / "kill_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nkills survived/attempted: {survived}/{attempted} {json.dumps(summary)}")
    assert json.loads((tmp_path / "kill_summary.json").read_text())["kills_survived"] == survived
    assert survived == attempted >= 10
    assert set(by_kind) == {"batch", "timer", "CKPT_PARTIAL", "CKPT_RENAME", "CKPT_RENAMED"}


def _determinism_run(server: ForkServer, isbi_dir: Path, tmp_path: Path, name: str,
                     seed: int) -> list[np.ndarray]:
    weights = tmp_path / f"{name}.npz"
    markers = tmp_path / f"{name}.markers"
    server.start({"job": "determinism", "seed": seed, "steps": 3, "data": str(isbi_dir),
                  "out": str(tmp_path / name), "weights": str(weights),
                  "markers": str(markers), "log": str(tmp_path / f"{name}.log")})
    status = server.wait()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, read_markers(markers)
    with np.load(weights) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def test_seeded_deterministic_training_gives_identical_weights(fork_server, isbi_dir, tmp_path):
    # Two separate processes, each: set_random_seed + enable_op_determinism, then 6 steps of
    # vggunet.training.train on the seeded real pipeline (shuffle, random crops, flips).
    first = _determinism_run(fork_server, isbi_dir, tmp_path, "a", seed=7)
    second = _determinism_run(fork_server, isbi_dir, tmp_path, "b", seed=7)
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)  # bit-exact, not approximately equal
    # The comparison has teeth: another seed gives other weights.
    other = _determinism_run(fork_server, isbi_dir, tmp_path, "c", seed=8)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))
