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

.PHONY: help venv test check run clean package lint audit
help:
	@echo "make run    run the whole pipeline locally (EVENTS=$(EVENTS) SHARDS=$(SHARDS))"
	@echo "make test   make check, then the test suite"
	@echo "make check  lint (ruff), format (ruff format --check), types (mypy --strict), import contracts"
	@echo "make audit  check the pinned requirements for known vulnerabilities (pip-audit; docs/security.md)"

$(STAMP): requirements/lambda.txt requirements/dev.txt
	@test -n "$(PYTHON)" || { echo "error: no python3.12 or python3.11 found" >&2; exit 1; }
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $@

venv: $(STAMP)

test: check
	$(PY) -m pytest $(PYTEST_ARGS)

# The gates (configured in pyproject.toml): every one at zero findings, or the target fails. `make fix` applies
# ruff's safe fixes and the formatter.
MYPY_PATHS := consumers producer model sam
check: $(STAMP)
	@echo "== ruff check";         $(VENV)/bin/ruff check --quiet .
	@echo "== ruff format --check"; $(VENV)/bin/ruff format --check --quiet .
	@echo "== mypy --strict";      $(VENV)/bin/mypy $(MYPY_PATHS)
	@echo "== import contracts";   $(VENV)/bin/lint-imports --no-cache
	@echo "== cfn-lint";           $(VENV)/bin/cfn-lint sam/template.yaml

.PHONY: fix
fix: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# ENRICH=postgres: features from a real PostgreSQL through a real Valkey cache (both started here, TLS).
ENRICH ?=
run: $(STAMP)
	$(PY) -m sam.local.run --events $(EVENTS) --shards $(SHARDS) $(if $(ENRICH),--enrich $(ENRICH))

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

# Mutation testing (not in CI, tests/mutation/README.md): mutmut over the modules of pyproject.toml
# [tool.mutmut] with tests/unit and tests/property; MUTANTS='consumers.core.kpl*' limits a run to some modules.
# Scores accumulate per module in tests/mutation/scores.json.
MUTANTS ?=
.PHONY: mutation
mutation: $(STAMP)
	# OMP_NUM_THREADS=1: mutmut forks each mutant's run from a process that has used XGBoost; a forked child
	# of a process with an OpenMP thread pool deadlocks in its first DMatrix (a "timeout" that tested nothing).
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2 $(MUTANTS)
	$(PY) -m tests.mutation.report --mutmut $(VENV)/bin/mutmut

# Soak (not in CI): SOAK_EVENTS through the local pipeline with faults switched on at random (sam/local/soak/):
# the `make run` accounting, RSS over time with a growth check, retries per fault. 1,000,000 events take ~20-30 min.
SOAK_EVENTS ?= 1000000
SOAK_ARGS ?=
.PHONY: soak
soak: $(STAMP)
	$(PY) -m sam.local.soak --events $(SOAK_EVENTS) $(SOAK_ARGS)

# A model rollout on a live local stream (sam/local/run/rollout.py, docs/rollout.md): publish a challenger, shadow
# it, canary it at 20%, promote it, roll back, mid-stream; every item checked against the model its phase gives it.
ROLLOUT_EVENTS ?= 20000
ROLLOUT_ARGS ?=
.PHONY: run-rollout
run-rollout: $(STAMP)
	$(PY) -m sam.local.run.rollout --events $(ROLLOUT_EVENTS) $(ROLLOUT_ARGS)

# Drift you can see (sam/local/run/drift.py, docs/monitoring.md): normal traffic, then DRIFT (producer --drift
# SPEC); the top features by PSI and the score quantiles per phase, build/run-drift/{summary.txt,drift.png}.
DRIFT_EVENTS ?= 20000
DRIFT ?= amount*3,ip_risk_score+0.3,channel=ecommerce@0.5
.PHONY: run-drift
run-drift: $(STAMP)
	$(PY) -m sam.local.run.drift --events $(DRIFT_EVENTS) --drift '$(DRIFT)'

# S3 batch path locally (sam/local/s3_demo.py): moto, a generated file under the input prefix, the S3 event,
# the head of the scored file and of .rejected. S3_ARGS e.g. "--format jsonl --enrich".
S3_ROWS ?= 10000
S3_ARGS ?=
.PHONY: run-s3
run-s3: $(STAMP)
	$(PY) -m sam.local.s3_demo --rows $(S3_ROWS) $(S3_ARGS)

# Large files through the split path (sam/local/s3_large.py): moto, the range queue, local range-worker processes
# with Lambda's SQS event-source semantics, the assembly; a progress bar per file, the status document and the
# speed-up against the single invocation of the same file; exits 1 unless the outputs match byte for byte.
# S3_ROWS changes the size (default 1,500,000 rows, ~270 MB here, ~3 min on 2 cores); S3_LARGE_ARGS e.g.
# "--workers 3 --range-mib 16 --format jsonl".
S3_LARGE_ROWS := $(if $(filter command line environment,$(origin S3_ROWS)),$(S3_ROWS),1500000)
S3_LARGE_ARGS ?=
.PHONY: run-s3-large
run-s3-large: $(STAMP)
	$(PY) -m sam.local.s3_large --rows $(S3_LARGE_ROWS) $(S3_LARGE_ARGS)

# HTTP API locally (sam/local/http_server.py): POST /score on 127.0.0.1:$(PORT) through the Lambda handler.
# `make serve` serves until Ctrl-C (SERVE_ARGS=--moto adds a scores table and enrichment); `make serve-demo` starts
# it, scores a sample with curl, and stops it.
PORT ?= 8080
SERVE_ARGS ?=
.PHONY: serve serve-demo
serve: $(STAMP)
	@echo "curl example: $(PY) -m sam.local.http_server --sample 3 | curl -sS -X POST http://127.0.0.1:$(PORT)/score -H 'content-type: application/json' --data-binary @-"
	$(PY) -m sam.local.http_server --port $(PORT) $(SERVE_ARGS)

serve-demo: $(STAMP)
	@$(PY) -m sam.local.http_server --port $(PORT) $(SERVE_ARGS) & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null' EXIT; \
	$(PY) -m sam.local.http_server --wait http://127.0.0.1:$(PORT)/score || exit 1; \
	echo "== POST /score, 2 events"; \
	$(PY) -m sam.local.http_server --sample 2 | curl -sS -X POST http://127.0.0.1:$(PORT)/score \
		-H 'content-type: application/json' --data-binary @- -w '\nHTTP %{http_code} in %{time_total}s\n'; \
	echo "== POST /score, an invalid event (400 with per-field errors)"; \
	curl -sS -X POST http://127.0.0.1:$(PORT)/score -H 'content-type: application/json' \
		-d '{"event_id": "e-1", "amount": "12", "currency": "XYZ"}' -w '\nHTTP %{http_code}\n' | cut -c1-400
