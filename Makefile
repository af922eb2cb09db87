# Autoheal: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 9009

.PHONY: run test venv migrate demo lint typecheck services-up services-down bench clean images compose-smoke

## Create .venv and install requirements-dev.txt (again only when a requirement file changed).
venv:
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/provision.sh python

migrate: venv
	$(PY) manage.py migrate --noinput

## Load the demo policy into an empty policy table only: a restart never undoes an operator's edit.
demo: migrate
	$(PY) manage.py autoheal_policies import deploy/policies/demo.yaml --if-empty

## Install into .venv, migrate SQLite, load the demo policy, run web + worker on $(HOST):$(PORT).
## Another host or port: make run HOST=0.0.0.0 PORT=9009 (and AUTOHEAL_ALLOWED_HOSTS, see README).
## Without AUTOHEAL_WEBHOOK_TOKENS(_FILE), POST /alert uses a token generated once into
## var/webhook-token (printed when it is created).
run: demo
	@if [ -z "$$AUTOHEAL_WEBHOOK_TOKENS$$AUTOHEAL_WEBHOOK_TOKENS_FILE" ] && [ ! -s var/webhook-token ]; then \
	  mkdir -p var && (umask 077 && $(PY) -c 'import secrets; print(secrets.token_urlsafe(32))' > var/webhook-token) && \
	  echo "POST /alert token (kept in var/webhook-token): $$(cat var/webhook-token)"; fi
	AUTOHEAL_WEBHOOK_TOKENS_FILE="$${AUTOHEAL_WEBHOOK_TOKENS_FILE:-var/webhook-token}" $(PY) manage.py autoheal_run --host $(HOST) --port $(PORT)

## Run the whole test suite. Installs what the tests need (scripts/provision.sh test: Debian
## packages, .venv, the OpenID provider's node_modules), starts the local services
## (scripts/services.sh up); a test whose service is still missing skips, or fails when
## AUTOHEAL_REQUIRE_SERVICES=1 (CI).
test:
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/provision.sh test
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

## The compose stack end to end on a private dockerd: canary, flip to production, an agent on a
## second private dockerd as "Running a fleet" says (deploy/smoke/fleet.sh), limits, logrotate,
## backup and restore, down -v. Stops everything it started (deploy/smoke/compose-smoke.sh).
compose-smoke:
	deploy/smoke/compose-smoke.sh

bench:
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/provision.sh bench
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) var .services test-artifacts
