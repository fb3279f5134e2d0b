# cnnkit: the two commands a newcomer needs.
#   make demo   set up, train the default model on Fashion-MNIST, evaluate it on the test set
#   make test   set up, run the test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR := /usr/share/datasets/fashion-mnist
DEMO_ARGS ?=
DEMO_RUN := demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test test-all setup test-setup data browser clean

# The virtual environment is rebuilt only when pyproject.toml changes.
$(BIN)/cnnkit: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (cnnkit targets Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

setup: $(BIN)/cnnkit data

test-setup: setup browser

# Fashion-MNIST from Debian's dataset-fashion-mnist package (installed when run as root and missing).
data:
	@if [ -f $(DATA_DIR)/train-images-idx3-ubyte.gz ] || [ -n "$$CNNKIT_DATA" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist' or set CNNKIT_DATA (cnnkit will try the official download otherwise)"; fi

# Headless Chromium and its driver for the browser tests (report.html, the serve web page).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium and chromium-driver for the browser tests"; \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium/chromedriver not found: browser tests will be skipped (sudo apt-get install chromium chromium-driver)"; fi

demo: setup
	$(BIN)/cnnkit train --name $(DEMO_RUN) $(DEMO_ARGS)
	$(BIN)/cnnkit evaluate runs/$(DEMO_RUN)
	@echo "run directory: runs/$(DEMO_RUN)"

test: test-setup
	$(BIN)/pytest -q --durations=15

test-all: test-setup
	$(BIN)/pytest -q -m "slow or not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
