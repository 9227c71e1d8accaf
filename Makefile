# Encore: `make render` and `make test` set everything up first (scripts/setup.sh).
.PHONY: setup render test lint clean distclean

VENV := .venv

setup:
	./scripts/setup.sh

render: setup
	$(VENV)/bin/encore render -o out/

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf out/ .pytest_cache/ .ruff_cache/ .hypothesis/ ./*.egg-info/
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)/
