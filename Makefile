# Two commands do all the set-up on a fresh machine:
#   make demo   build, fetch the default model, verify the shipped examples
#   make test   build, fetch the default model and llama-server (for the remote-backend
#               tests), run every test against the real model, then the Python clients'
#               tests (pytest, installed with pip when missing) against the built server
CARGO ?= cargo

.PHONY: demo test prereqs model bench llama-server

demo: prereqs
	$(CARGO) run --release --quiet -- verify --input examples/longform.jsonl

test: prereqs model llama-server
	@./scripts/install-prereqs.sh chromium
	GAVEL_LLAMA_SERVER="$${GAVEL_LLAMA_SERVER:-$$(./scripts/build-llama-server.sh)}" $(CARGO) test --release
	@# Timing-based server tests, alone and one at a time, so that no other test's server shares the CPU.
	$(CARGO) test --release --test server -- --ignored --test-threads=1
	@# The Python reward clients (clients/python) against the gavel binary just built.
	@python3 -m pytest --version >/dev/null 2>&1 || python3 -m pip install --quiet pytest \
		|| python3 -m pip install --quiet --break-system-packages pytest
	cd clients/python && python3 -m pytest -q

prereqs:
	@./scripts/install-prereqs.sh

model: prereqs
	$(CARGO) run --release --quiet -- fetch-model

bench: prereqs
	$(CARGO) run --release --quiet -- bench --input examples/longform.jsonl

# llama.cpp's server, built once into $GAVEL_HOME, for the remote-backend tests.
llama-server: prereqs
	@[ -n "$$GAVEL_LLAMA_SERVER" ] || ./scripts/build-llama-server.sh >/dev/null
