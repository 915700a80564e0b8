# Two commands do all the set-up on a fresh machine:
#   make demo   build, fetch the default model, verify the shipped examples
#   make test   build, fetch the default model, run every test against the real model
CARGO ?= cargo

.PHONY: demo test prereqs model bench

demo: prereqs
	$(CARGO) run --release --quiet -- verify --input examples/longform.jsonl

test: prereqs model
	@./scripts/install-prereqs.sh chromium
	$(CARGO) test --release

prereqs:
	@./scripts/install-prereqs.sh

model: prereqs
	$(CARGO) run --release --quiet -- fetch-model

bench: prereqs
	$(CARGO) run --release --quiet -- bench --input examples/longform.jsonl
