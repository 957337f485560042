"""An instant CLI: help and usage errors load no TensorFlow, Keras or matplotlib, print no TF logs.

Each case runs in a fresh interpreter (what is imported is the point), without
TF_CPP_MIN_LOG_LEVEL in its environment, so that a TensorFlow import would show its log lines.
How fast this is gets measured by benchmarks/cli_startup.py, not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "matplotlib", "jax", "torch")
COMMANDS = ("inspect", "train", "finetune", "predict", "evaluate", "export", "demo")

# Runs `vggunet.cli.main(argv)` and writes its exit code and the heavy modules it loaded to a
# report file (stdout and stderr stay exactly what the command printed).
_RUN_MAIN = f"""
import json, sys
from vggunet.cli.app import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
with open(sys.argv[1], "w") as handle:
    json.dump({{"code": code, "heavy": heavy}}, handle)
"""


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "MPLBACKEND")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_main(argv: list[str], tmp_path: Path) -> tuple[dict, subprocess.CompletedProcess]:
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-c", _RUN_MAIN, str(report), *argv],
                          capture_output=True, text=True, env=_environment(), timeout=120)
    assert report.is_file(), proc.stderr
    return json.loads(report.read_text()), proc


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in COMMANDS],
                         ids=lambda argv: " ".join(argv))
def test_help_loads_nothing_heavy_and_prints_no_logs(argv, tmp_path):
    report, proc = run_main(argv, tmp_path)
    assert report == {"code": 0, "heavy": []}
    assert proc.stderr == ""
    assert "usage: vggunet" in proc.stdout


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--data", "d", "--out", "o", "--epochs", "0"], "--epochs"),
    (["predict", "--model", "m.keras", "--input", "x"], "--out"),
    (["finetune", "--data", "d", "--out", "o", "--phase2-lr", "-1"], "--phase2-lr"),
    (["inspect", "--precision", "mixed"], "--precision"),
    (["export", "--model", "m.keras", "--out", "x", "--input-size", "0x0"], "--input-size"),
    (["nosuchcommand"], "invalid choice"),
])
def test_usage_error_loads_nothing_heavy_and_is_one_line(argv, fragment, tmp_path):
    report, proc = run_main(argv, tmp_path)
    assert report == {"code": 2, "heavy": []}
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vggunet") and fragment in lines[0], lines
    assert proc.stdout == ""


def test_python_m_vggunet_help_imports_no_tensorflow():
    """The real entry point, through `-X importtime` (one stderr line per imported module)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "vggunet", "--help"],
                          capture_output=True, text=True, env=_environment(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0]
               for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "vggunet" in modules
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert not [ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:")]


def test_import_vggunet_and_its_cli_loads_nothing_heavy():
    code = ("import json, sys, vggunet, vggunet.cli, vggunet.cli.app, vggunet.errors, "
            "vggunet.console, vggunet.inference.labels\n"
            "vggunet.cli.build_parser()\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_environment(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_only_the_cli_entry_point_sets_the_tensorflow_log_level():
    """The library leaves the user's environment alone; `main` quiets TensorFlow's C++ logs
    (unless the user chose a level) before anything imports TensorFlow."""
    code = (
        "import json, os\n"
        # Modules that do not import TensorFlow (which sets TF_CPP_MIN_LOG_LEVEL=1 itself).
        "import vggunet, vggunet.demo, vggunet.plots, vggunet.inference, vggunet.training\n"
        "after_import = {k: os.environ.get(k) for k in ('TF_CPP_MIN_LOG_LEVEL', 'MPLBACKEND')}\n"
        "from vggunet.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps([after_import, os.environ.get('TF_CPP_MIN_LOG_LEVEL')]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_environment(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    after_import, after_main = json.loads(proc.stdout.splitlines()[-1])
    assert after_import == {"TF_CPP_MIN_LOG_LEVEL": None, "MPLBACKEND": None}
    assert after_main == "3"
    # Nothing else in the package writes to the environment (export sets tf2onnx's own switch
    # around a conversion and restores it).
    writers = [f"{path.relative_to(REPO)}:{number}"
               for path in sorted((REPO / "vggunet").rglob("*.py"))
               for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if "os.environ" in line and ("setdefault" in line or "] =" in line)
               and path.name != "app.py"]
    assert {w.split(":")[0] for w in writers} <= {"vggunet/export.py"}, writers

    chosen = dict(_environment(), TF_CPP_MIN_LOG_LEVEL="1")
    proc = subprocess.run(
        [sys.executable, "-c", "import os\nfrom vggunet.cli import main\ntry:\n    main(['--help'])"
         "\nexcept SystemExit:\n    pass\nprint(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
        capture_output=True, text=True, env=chosen, timeout=120)
    assert proc.stdout.splitlines()[-1] == "1"
