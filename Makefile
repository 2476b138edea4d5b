# Two commands do all set-up on a fresh machine: `make run` and `make test` (README.md).
# Each creates .venv from the pinned requirements itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Lambda runtime is python3.12; fall back to 3.11 where 3.12 is not installed.
# (A pyenv shim can exist without its interpreter, so each candidate is run, not just found.)
PYTHON ?= $(shell for p in python3.12 $$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 2>/dev/null) python3.11 python3; do \
	"$$p" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EVENTS ?= 20000
SHARDS ?= 4
PYTEST_ARGS ?=

.PHONY: help venv test run clean package lint audit
help:
	@echo "make run    run the whole pipeline locally (EVENTS=$(EVENTS) SHARDS=$(SHARDS))"
	@echo "make test   run the test suite"
	@echo "make audit  check the pinned requirements for known vulnerabilities (pip-audit; docs/security.md)"

$(STAMP): requirements/lambda.txt requirements/dev.txt
	@test -n "$(PYTHON)" || { echo "error: no python3.12 or python3.11 found" >&2; exit 1; }
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

run: $(STAMP)
	$(PY) -m consumers.local.run --events $(EVENTS) --shards $(SHARDS)

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis

# The Lambda artifact in build/lambda (sam/template.yaml's CodeUri); ARCH=arm64 for Graviton (docs/deploy.md).
package: $(STAMP)
	$(PY) sam/package.py $(if $(ARCH),--arch $(ARCH))

lint: $(STAMP)
	$(VENV)/bin/cfn-lint sam/template.yaml

# Benchmarks (benchmarks/README.md): the measured process on core 0, moto / the fake DynamoDB on core 1.
# `make bench` writes benchmarks/results/*.json, *.png and REPORT.md (~15 min); `make bench-smoke` runs every
# step on tiny sizes into a temporary directory (~1 min).
.PHONY: bench bench-smoke
bench: $(STAMP)
	taskset -c 0 $(PY) -m benchmarks.run_all

bench-smoke: $(STAMP)
	taskset -c 0 $(PY) -m benchmarks.run_all --quick

# Known vulnerabilities in the pinned requirements (docs/security.md, "Dependency audit"). The pins are the full
# resolved closure, so no resolution is needed (--disable-pip --no-deps). --strict: a package the vulnerability
# service cannot look up fails the audit instead of being skipped, so an unreachable service never passes.
# Accepted findings: AUDIT_ARGS="--ignore-vuln ID ..." with the reason recorded in docs/security.md.
AUDIT_ARGS ?=
audit: $(STAMP)
	$(VENV)/bin/pip-audit --strict --disable-pip --no-deps --progress-spinner off \
		-r requirements/lambda.txt -r requirements/dev.txt $(AUDIT_ARGS)
