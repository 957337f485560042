# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -n auto --maxprocesses 4

.PHONY: install demo test test-slow test-every-backbone test-backends bench bench-quick clean

# The [hub] extra (keras-hub backbones) installs nothing on Python 3.10: tests/test_hub.py skips.
# uv (from PyPI, into the venv) installs the project and its extras: the whole install takes
# about 40 s on the 2-core machine against about 2 min with pip, which unpacks and byte-compiles
# TensorFlow on one core. --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on the CI
# machine) nothing else writes .pyc files, and TensorFlow's import then takes 20 s, not 8 s.
# uv may pick other minor versions of dependencies than pip would. `make test-backends` keeps
# pip, which reads pip's configuration (a local torch wheel and its version cap, where a
# machine has them). Where uv cannot be installed (a registry without it), pip installs the
# project instead; a failure of uv's own install is an error, not a reason to fall back.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	if $(PY) -m pip install --quiet uv; then \
		$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e ".[test,hub]"; \
	else \
		echo "uv could not be installed: installing with pip (about 2 minutes)"; \
		$(PY) -m pip install --quiet -e ".[test,hub]"; \
	fi
	$(PY) -m ipykernel install --sys-prefix >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/vggunet demo --out runs/demo

# pytest-xdist runs the suite on up to 4 processes (2 on this project's 2-core machine, where the
# suite's wall time is about half the sum of its tests' times). `--dist loadfile` keeps a file's
# tests on one worker, so a module-scoped fixture (a training run, a saved model) is made once,
# not once per worker. Tests must not depend on each other or on a shared folder.
# `--no-loadscope-reorder` keeps conftest.HEAVIEST_FILES_FIRST's order: long files start first.
# `-m "not every_backbone"` leaves out the U-Nets of each backbone family's other members
# (tests/test_backbones.py: the first member's code path, 4-5 minutes of model building);
# `make test-every-backbone` runs them, and `.ci/run` runs both.
# `-m "not slow"` leaves out 19 end-to-end tests (the demo command, two notebooks, two
# tf.distribute runs, the 3D CLI and workflow files, a keras-hub file, two CLI run-folder
# checks: about 5 minutes of CPU, 2.5 of wall time) that `make test-slow` runs; `.ci/run` runs
# both. With them `make test` took 14:26
# (15:12 with the install) on a slow day of the 2-core machine, past the 15-minute target.
test: install
	$(PYTEST) --dist loadfile \
		--no-loadscope-reorder -m "not every_backbone and not slow"

test-slow: install
	$(PYTEST) --dist loadfile \
		-m "slow and not every_backbone"

test-every-backbone: install
	$(PYTEST) -m every_backbone \
		tests/test_backbones.py

# Builders, freezing, losses, metrics and saving on the TensorFlow, JAX and PyTorch backends,
# each in its own process; installs torch (CPU) and jax into the same venv.
test-backends: install
	$(PY) -m pip install --quiet -e ".[test,backends]"
	VGGUNET_TEST_BACKENDS=1 TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -n auto --maxprocesses 4 \
		tests/test_backends.py

bench: install
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) benchmarks/throughput.py

bench-quick: install
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) benchmarks/throughput.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache build *.egg-info
