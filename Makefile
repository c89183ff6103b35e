# `make test` and `make demo` do all of the set-up: they create .venv when missing and install the
# project into it. Torch: a machine with an NVIDIA driver gets pip's default build; a CPU-only
# machine gets the CPU build (torch 2.13.0 from the local wheel folder where one exists, otherwise
# pass the CPU wheel index with TORCH_PIP_ARGS="--index-url <cpu index>"). Never a CUDA build on a CPU box.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
WHEELS ?= /opt/wheels

.PHONY: install test lint format demo clean bench

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		$(PIP) install -q "torch>=2.4" $(TORCH_PIP_ARGS); \
	elif ls $(WHEELS)/torch-$(TORCH_VERSION)+cpu-*.whl >/dev/null 2>&1; then \
		$(PIP) install -q "torch==$(TORCH_VERSION)" --find-links $(WHEELS); \
	else \
		$(PIP) install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS); \
	fi
	$(PIP) install -q -e ".[dev,export]"
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(VENV)/bin/pytest -n 2 -q

# The whole pipeline in miniature (measured 23 minutes on 2 idle CPU cores): the quickstart's ladder search,
# the promotion of its top 2 beside DeepLabv3-ResNet-50 at the CPU promotion preset over 2 seeds,
# and the report with the verdict. Run again: each step resumes or shows what it has.
demo: install
	@if [ -f runs/quickstart/config.yaml ]; then \
		$(VENV)/bin/nas search --resume runs/quickstart; \
	else \
		$(VENV)/bin/nas search --config launch/configs/quickstart.yaml --out runs/quickstart; \
	fi
	$(VENV)/bin/nas promote runs/quickstart --top 2 --seeds 2 --fidelity promote-cpu
	$(VENV)/bin/nas report runs/quickstart && echo "report written to runs/quickstart/report/index.html"

bench: install
	$(PY) benchmarks/builder_speed.py
	$(PY) benchmarks/search_bench.py efficiency

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
