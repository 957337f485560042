"""How long the `vggunet` command takes to start: help, subcommand help, a usage error.

Each command runs `--runs` times (after one untimed warm-up run that also writes the `.pyc`
files) as a fresh process; the table gives the median wall time and its ratio to
`python -c pass`, the interpreter's own start-up, on this machine. None of these commands
should import TensorFlow (tests/test_startup.py checks that); this measures what that buys.

    .venv/bin/python benchmarks/cli_startup.py            # prints a markdown table
    .venv/bin/python benchmarks/cli_startup.py --runs 9
    .venv/bin/python benchmarks/cli_startup.py --before /tmp/old   # + rows for an older tree

`--before DIR` adds the same commands run from another source tree (e.g. `git worktree add
/tmp/old 86619a9`), as `python -m vggunet` with `PYTHONPATH=DIR`, timed in the same run.

`vggunet` is the console script beside the interpreter (else `python -m vggunet`). The
figures depend on the machine and its load: run it on a quiet machine and compare rows of
one table, not tables.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _vggunet() -> list[str]:
    script = Path(sys.executable).with_name("vggunet")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "vggunet"]


def commands(cli: list[str], prefix: str = "") -> list[tuple[str, list[str], int]]:
    """The timed commands.

    Args:
        cli: how to start the command (`vggunet` or `python -m vggunet`).
        prefix: label prefix (for the rows of an older tree).

    Returns:
        `(label, argv, expected exit code)` for each row of the table.
    """
    python = [sys.executable]
    rows = [
        (f'{prefix}python -c "import vggunet"', [*python, "-c", "import vggunet"], 0),
        (f"{prefix}vggunet --help", [*cli, "--help"], 0),
        (f"{prefix}vggunet train --help", [*cli, "train", "--help"], 0),
        (f"{prefix}vggunet predict --help", [*cli, "predict", "--help"], 0),
        (f"{prefix}vggunet train --epochs 0 (usage error)",
         [*cli, "train", "--data", "d", "--out", "o", "--epochs", "0"], 2),
    ]
    return rows if prefix else [("python -c pass", [*python, "-c", "pass"], 0), *rows]


def time_command(argv: list[str], runs: int, expected: int,
                 env: dict[str, str] | None = None,
                 cwd: str | None = None) -> tuple[list[float], int]:
    """Wall times of `runs` fresh runs of `argv`, after one untimed warm-up.

    Args:
        argv: the command.
        runs: timed runs.
        expected: the exit code the command must return.
        env: the environment (default: this process's, without `TF_CPP_MIN_LOG_LEVEL`).
        cwd: the working folder (the older tree for its rows: `python -c` puts the working
            folder first on `sys.path`).

    Returns:
        The seconds of each timed run, and the number of lines the last run wrote to stderr
        beyond the command's own one-line usage error (TensorFlow's start-up lines).
    """
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    times, noise = [], 0
    for attempt in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                              cwd=cwd)
        elapsed = time.perf_counter() - start
        if done.returncode != expected:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}, expected {expected}:\n"
                             f"{done.stderr.decode(errors='replace')}")
        lines = done.stderr.decode(errors="replace").splitlines()
        noise = len([line for line in lines if "error:" not in line])
        if attempt:
            times.append(elapsed)
    return times, noise


def machine() -> str:
    """A one-line description of this machine.

    Returns:
        CPU model, core count, OS and Python version.
    """
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def main() -> None:
    """Times the commands and prints the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (median)")
    parser.add_argument("--before", default=None, metavar="DIR",
                        help="also time the commands from this older source tree")
    args = parser.parse_args()
    plan = [(label, argv, code, None, None) for label, argv, code in commands(_vggunet())]
    if args.before:
        before = str(Path(args.before).resolve())
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        env["PYTHONPATH"] = before
        plan += [(label, argv, code, env, before) for label, argv, code in
                 commands([sys.executable, "-m", "vggunet"], prefix="before: ")]
    rows = []
    for label, argv, code, env, cwd in plan:
        times, noise = time_command(argv, args.runs, code, env, cwd)
        rows.append((label, statistics.median(times), noise))
    base = rows[0][1]
    print(f"CLI start-up, median of {args.runs} runs after one warm-up, "
          f"{datetime.date.today().isoformat()}; {machine()}.")
    print("Produced by `python benchmarks/cli_startup.py"
          + (f" --before {args.before}`" if args.before else "`") + ".\n")
    print("| command | median (s) | × `python -c pass` | stderr lines |")
    print("| --- | ---: | ---: | ---: |")
    for label, seconds, noise in rows:
        print(f"| `{label}` | {seconds:.3f} | {seconds / base:.1f} | {noise} |")


if __name__ == "__main__":
    main()
