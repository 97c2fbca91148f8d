# Two commands do all the set-up on a fresh machine:
#   make quickstart   build .venv, then run the main job on the embedded default (the offline synthetic world)
#   make test         build .venv, then run the test suite
#   make demo         the composed-search web app on the quickstart's model (mra-cir app)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The Python that makes $(VENV). A torch it already has (a CUDA build, say) is kept: the venv is then made with
# --system-site-packages and uses it. Otherwise $(TORCH) is installed first (the tested CPU version; pass
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for the CPU-only wheel, or a CUDA index for a GPU build).
PYTHON ?= python3
TORCH ?= torch==2.13.0
TORCH_INDEX_URL ?=
HAS_TORCH = $(shell $(PYTHON) -c "import torch" 2>/dev/null && echo yes)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install quickstart demo test lint bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(if $(HAS_TORCH),--system-site-packages) $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first where the venv has none (an unpinned torch pulls the newest, multi-GB CUDA build)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH)"
	$(PIP) install -q -e ".[dev,serving,app]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/mra-cir quickstart
	@echo "Next: make demo, or run the commands from the venv: source $(VENV)/bin/activate, then mra-cir app"

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
