# PatchPanda Gateway. `make run` starts the local stack; `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo
FUNCTION ?= webhook-ingest
PORT_BASE ?= 8080

.PHONY: run install build test test-e2e lint fmt bench fuzz image infra-check ci clean-local

## The whole stack on this machine (local backend, state in ./.patchpanda).
## The commands it prints name the built binary by its full path, so they
## work as printed; after `make install` they say just `patchpanda`.
run:
	$(CARGO) run -p patchpanda -- dev --port-base $(PORT_BASE)

## Put `patchpanda` on PATH (cargo's bin folder, usually ~/.cargo/bin).
install:
	$(CARGO) install --locked --path cli

build:
	$(CARGO) build --workspace

## Every test: unit, integration, end-to-end. The end-to-end crate runs
## with Google's Pub/Sub emulator (started for it, stopped on exit) so its
## emulator suite runs too; without gcloud those tests print SKIPPED. Only
## that crate sees PUBSUB_EMULATOR_HOST: the other suites run their
## processes on the local bus.
test:
	@rc=0; \
	env -u PUBSUB_EMULATOR_HOST $(CARGO) test --workspace --exclude patchpanda-e2e --no-fail-fast || rc=$$?; \
	$(MAKE) --no-print-directory test-e2e || rc=$$?; \
	exit $$rc

## Only the end-to-end suite, emulator included.
test-e2e:
	bash scripts/pubsub-emulator.sh run -- $(CARGO) test -p patchpanda-e2e --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Benchmarks; results are written down in BENCHMARKS.md.
bench:
	$(CARGO) bench -p audit-alerter
	bash functions/webhook-ingest/bench/run.sh
	bash functions/webhook-ingest/bench/emulator.sh

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
