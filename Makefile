# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/vggunet demo --out runs/demo

test: install
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q

bench: install
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) benchmarks/throughput.py

bench-quick: install
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) benchmarks/throughput.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache build *.egg-info
