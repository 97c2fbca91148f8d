# Two commands do all the set-up on a fresh machine:
#   make quickstart   build .venv, then run the main job on the embedded default (the offline synthetic world)
#   make test         build .venv, then run the test suite
#   make demo         the composed-search web app on the quickstart's model (mra-cir app)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install quickstart demo test lint bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch wheel first where no torch is installed (an unpinned torch pulls a multi-GB CUDA build)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,serving,app]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/mra-cir quickstart

# the composed-search web app on the last quickstart run (the page says how to make one if there is none)
demo: install
	$(VENV)/bin/mra-cir app

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q --timeout 900 -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) benchmarks/bench_model.py

clean:
	rm -rf $(VENV) build *.egg-info
