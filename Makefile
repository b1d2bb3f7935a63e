# The README's two commands: `make run` serves the bundled model on SQLite, `make test` tests.
# Plain `make` lists the targets. Every target that needs Python makes .venv first
# (scripts/venv: Python 3.11 or newer, rebuilt when another interpreter made it).
.DEFAULT_GOAL := help
BIN := .venv/bin

.PHONY: help run serve test test-fast coverage lint migrate bench container-check clean

help:  ## list the targets
	@echo "make TARGET, where TARGET is one of:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 20
	@echo "(PYTHON=/path/to/python3.11 picks the interpreter; ARGS=... passes arguments on)"

run:  ## serve the bundled models on PORT (default 5000) with gunicorn, on SQLite
	@scripts/venv prod
	$(BIN)/gunicorn -c gunicorn.conf.py app:app

serve:  ## Flask's own server, for debugging
	@scripts/venv prod
	$(BIN)/python app.py

test:  ## the whole suite on SQLite, then on PostgreSQL (ARGS="-k contract -x" for pytest)
	@scripts/venv dev
	PYTHON=$(BIN)/python scripts/run-tests $(ARGS)

test-fast:  ## the suite without e2e, browser and multi-process tests, on SQLite (under 2 minutes)
	@scripts/venv dev
	env -u TEST_DATABASE_URL $(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder -m "not e2e and not slow" $(ARGS)

coverage:  ## line coverage of serving, training and custom_transformers per file, SQLite pass, in-process
	@scripts/venv dev
	env -u TEST_DATABASE_URL $(BIN)/python -m coverage run --data-file=.coverage \
	  --source=serving,training,custom_transformers -m pytest -n 0 -q $(ARGS)
	$(BIN)/python -m coverage report --data-file=.coverage

lint:  ## ruff, ruff format, mypy and hadolint
	@scripts/venv dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile deploy/pgbouncer/Dockerfile

migrate:  ## bring the database at DATABASE_URL up to date
	@scripts/venv prod
	$(BIN)/flask --app app migrate

bench:  ## the benchmark against the naive baseline (needs wrk; about 6 minutes)
	@scripts/venv dev
	$(BIN)/python -m bench $(ARGS)

container-check:  ## build the image and run it for real (root; podman, buildah; about 2 minutes)
	scripts/container-check

clean:  ## remove .venv, caches and the default SQLite database
	rm -rf .venv .pytest_cache .ruff_cache .mypy_cache .coverage predictions.db*
