# Sluice: the two commands are `make demo` and `make test` (README.md).
#
# Every target checks its prerequisites first (deploy/local/prereqs.sh): it installs what
# it can (as root: apt-get / pip) or stops with the exact command to run.

SHELL        := bash
.SHELLFLAGS  := -euo pipefail -c
CARGO        ?= cargo
STACK        := deploy/local/stack.sh
PREREQS      := deploy/local/prereqs.sh

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: prereqs
prereqs: ## check (and where possible install) what the stack needs
	@bash $(PREREQS)

.PHONY: stack-up
stack-up: prereqs ## start the local PostgreSQL + SQS-API server (idempotent)
	@bash $(STACK) up >/dev/null

.PHONY: stack-down
stack-down: ## stop the local stack (keeps its data; `bash deploy/local/stack.sh down --purge` deletes it)
	@bash $(STACK) down

.PHONY: build
build: prereqs ## build every binary (debug)
	$(CARGO) build --workspace --bins

.PHONY: demo
demo: stack-up ## run the whole bridge locally: upload ~20,000 receipts and watch them drain
	$(CARGO) build --workspace --bins
	@$(CARGO) run --quiet -p sluice-e2e --bin sluice-demo -- $(DEMO_ARGS)

.PHONY: test
test: stack-up check-deploy ## run every test against the real servers, and lint the deploy files
	@eval "$$(bash $(STACK) env)"; \
	  export SLUICE_TEST_DATABASE_URL SLUICE_TEST_SQS_ENDPOINT; \
	  $(CARGO) test --workspace --all-targets --no-fail-fast
	@$(MAKE) --no-print-directory test-systemd

# The agent binary it installs: the debug build `make test` has just made (the release build
# would add several minutes of compiling on two cores for no behaviour systemd can see). Built
# and run with `--workspace`, as `make test` builds, so both reuse that build: a `-p` build
# unifies features differently and recompiled about 80 crates (2.5 min here);
# SYSTEMD_AGENT=target/release/sluice-agent tests that one (build it first).
SYSTEMD_AGENT ?=
.PHONY: test-systemd
test-systemd: stack-up ## the unit under a real systemd, in a Debian container (root, Linux, Debian's archive); skips saying why elsewhere
	@rc=0; bash deploy/systemd/container.sh check || rc=$$?; \
	  if [[ $$rc -eq 3 ]]; then exit 0; elif [[ $$rc -ne 0 ]]; then exit $$rc; fi; \
	  if [[ -z "$(SYSTEMD_AGENT)" ]]; then $(CARGO) test --quiet --workspace --all-targets --no-run; fi; \
	  eval "$$(bash $(STACK) env)"; \
	  export SLUICE_TEST_DATABASE_URL SLUICE_TEST_SQS_ENDPOINT; \
	  export SLUICE_SYSTEMD_AGENT="$(if $(SYSTEMD_AGENT),$(abspath $(SYSTEMD_AGENT)))"; \
	  $(CARGO) test --workspace --test e2e -- --ignored systemd::

.PHONY: check-deploy
check-deploy: ## cfn-lint the AWS SAM template (installs cfn-lint from PyPI if missing); check the systemd unit and alert rules
	@bash deploy/aws/check.sh
	@bash deploy/systemd/check.sh
	@bash deploy/prometheus/check.sh

.PHONY: lambda
lambda: ## build the ingest Lambda (arm64, provided.al2023) as target/lambda/sluice-ingest/bootstrap.zip
	@bash deploy/aws/build-lambda.sh

.PHONY: bench
bench: stack-up ## benchmarks (release build, then ~95 min, 80 of them the pinned protection rows; BENCH_ARGS=--quick ~7 min, --only-speed ~2 min): prints one table
	$(CARGO) build --release -p sluice-agent -p sluice-cloud -p sluice-e2e --bins
	@eval "$$(bash $(STACK) env)"; \
	  export SLUICE_TEST_DATABASE_URL SLUICE_TEST_SQS_ENDPOINT; \
	  $(CARGO) run --release --quiet -p sluice-e2e --bin sluice-bench -- $(BENCH_ARGS)

.PHONY: lint
lint: ## rustfmt and clippy, as before every commit
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: clean
clean: stack-down ## stop the stack and remove build output
	$(CARGO) clean
