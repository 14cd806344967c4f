# PatchPanda Gateway. `make run` starts the local stack; `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo
FUNCTION ?= webhook-ingest
PORT_BASE ?= 8080

.PHONY: run build test test-e2e lint fmt bench fuzz image infra-check ci clean-local

## The whole stack on this machine (local backend, state in ./.patchpanda).
run:
	$(CARGO) run -p patchpanda -- dev --port-base $(PORT_BASE)

build:
	$(CARGO) build --workspace

## Every test: unit, integration, end-to-end. Starts Google's Pub/Sub
## emulator for the emulator-mode suite (stopped on exit); without gcloud
## those tests print SKIPPED.
test:
	bash scripts/pubsub-emulator.sh run -- $(CARGO) test --workspace --no-fail-fast

## Only the end-to-end suite, emulator included.
test-e2e:
	bash scripts/pubsub-emulator.sh run -- $(CARGO) test -p patchpanda-e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Benchmarks; results are written down in BENCHMARKS.md.
bench:
	$(CARGO) bench -p audit-alerter
	bash functions/webhook-ingest/bench/run.sh

## Fuzz the parsers of untrusted input (needs cargo-fuzz; see fuzz/README.md).
fuzz:
	bash fuzz/run.sh

## One container image per function: make image FUNCTION=rotation-worker
image:
	bash infra/image.sh $(FUNCTION)

## Static checks of infra/: every .tf parses, checkov passes.
infra-check:
	bash infra/check.sh

## What CI runs.
ci: lint infra-check test

clean-local:
	rm -rf ./.patchpanda
