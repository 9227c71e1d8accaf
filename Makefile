# Encore: `make render` and `make test` set everything up first (scripts/setup.sh).
.PHONY: setup render test lint gpu clean distclean

VENV := .venv
OUT ?= out
# Bars to render; empty: the patch's [song] bars, else 64 (encore render's default).
BARS ?=

setup:
	./scripts/setup.sh

# `make render OUT=/tmp/x BARS=4` renders 4 bars into /tmp/x (the README test does this).
render: setup
	$(VENV)/bin/encore render -o $(OUT)/ $(if $(BARS),--bars $(BARS))

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q --durations=30

lint: setup
	$(VENV)/bin/ruff check .

# GPU inference: onnxruntime-gpu replaces onnxruntime (see scripts/use_gpu.sh).
gpu: setup
	VENV=$(VENV) ./scripts/use_gpu.sh

clean:
	rm -rf out/ .pytest_cache/ .ruff_cache/ .hypothesis/ ./*.egg-info/
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)/
