# Autoheal: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 9009

.PHONY: run test venv migrate demo lint typecheck services-up services-down bench clean images compose-smoke

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

migrate: venv
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py autoheal_policies import deploy/policies/demo.yaml

## Install into .venv, migrate SQLite, load the demo policy, run web + worker on :$(PORT).
## Without AUTOHEAL_WEBHOOK_TOKENS(_FILE), POST /alert uses a token generated once into
## var/webhook-token (printed when it is created).
run: demo
	@if [ -z "$$AUTOHEAL_WEBHOOK_TOKENS$$AUTOHEAL_WEBHOOK_TOKENS_FILE" ] && [ ! -s var/webhook-token ]; then \
	  mkdir -p var && (umask 077 && $(PY) -c 'import secrets; print(secrets.token_urlsafe(32))' > var/webhook-token) && \
	  echo "POST /alert token (kept in var/webhook-token): $$(cat var/webhook-token)"; fi
	AUTOHEAL_WEBHOOK_TOKENS_FILE="$${AUTOHEAL_WEBHOOK_TOKENS_FILE:-var/webhook-token}" $(PY) manage.py autoheal_run --port $(PORT)

## Run the whole test suite. Starts the local services it can (scripts/services.sh up); tests
## whose service is missing skip locally and fail when AUTOHEAL_REQUIRE_SERVICES=1.
test: venv
	-scripts/services.sh up
	eval "$$(scripts/services.sh env)" && $(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy .

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down

## Build every image the compose files use, into the Docker Engine at DOCKER_HOST: upstream bases
## where a registry answers, else equivalents built from Debian packages (docs/deployment.md, "Images").
images:
	deploy/images/build.sh

## The compose stack end to end on a private dockerd: canary, flip to production, limits, logrotate,
## backup and restore, down -v. Stops everything it started (deploy/smoke/compose-smoke.sh).
compose-smoke:
	deploy/smoke/compose-smoke.sh

bench: venv
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) var .services test-artifacts
