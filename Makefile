# The README's two commands: `make run` serves the bundled model on SQLite, `make test` tests.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run serve test lint migrate bench container-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.prod: requirements_prod.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements_prod.txt
	touch $@

$(VENV)/.dev: requirements_dev.txt requirements_prod.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements_dev.txt
	touch $@

run: $(VENV)/.prod  ## serve on $$PORT (default 5000) with gunicorn
	$(BIN)/gunicorn -c gunicorn.conf.py app:app

serve: $(VENV)/.prod  ## Flask's own server, for debugging
	$(BIN)/python app.py

test: $(VENV)/.dev  ## the whole suite on SQLite, then on PostgreSQL when reachable
	PYTHON=$(BIN)/python scripts/run-tests $(ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

bench: $(VENV)/.dev  ## the benchmark against the naive baseline (needs wrk; about 6 minutes)
	$(BIN)/python -m bench $(ARGS)

container-check:  ## build the image and run it for real (root; podman, buildah; about 2 minutes)
	scripts/container-check

migrate: $(VENV)/.prod
	$(BIN)/flask --app app migrate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache predictions.db*
