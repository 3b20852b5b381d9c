# Everything a developer or admin runs. `make run` and `make test` are all a new user needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= rules/gateway.example.toml
# PUBLIC_CORPUS: mail that is not yours (the shipped model's); CORPUS: your own labelled mail,
# whose held-out part decides whether the model may quarantine alone (docs/learning.md).
PUBLIC_CORPUS ?= ../shared/corpus/spamassassin-public
CORPUS ?=
# Where `gateway learn` and quarantine --learn file messages: <[storage] dir>/feedback of
# CONFIG unless FEEDBACK names another store.
FEEDBACK ?=
STAMP := $(VENV)/.installed

.PHONY: install system-deps bench-deps run test lint bench train clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,train]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the gateway and tests need (clamd for the antivirus tests, libarchive13 for
# archive listing, systemd-analyze for the unit file); needs root, does nothing when they are
# already there.
system-deps:
	sh .ci/install-clamav.sh
	sh .ci/install-systemd.sh

# Postfix's smtp-source and smtp-sink, the C load tools of benchmarks/bench_scaling.py (no mail
# server is configured or started).
bench-deps:
	sh benchmarks/install-postfix-tools.sh

# The gateway on 127.0.0.1:2525 relaying to a local test sink on SINK (127.0.0.1:2526) that
# files mail into var/sink/new. Both stop on Ctrl-C, and when make alone gets SIGTERM (which it
# passes on) or SIGINT from a script or supervisor: make only waits for its children then, so
# the recipe watches make's caught-signal mask (make stops catching SIGINT once it got one) and
# make itself, and stops both with SIGTERM (the gateway drains). The mask is compared with its
# value at start: a make started in the background (`make run &` in a script) ignores SIGINT
# from the start and must run on all the same. Run as root (a container, CI), it
# stays root: a developer's run, not a deployment (docs/deploy.md drops to a user of its own).
SINK ?= 127.0.0.1:2526
run: install
	mkdir -p var
	@bash -c 'make_pid=$(shell echo $$PPID); \
	  $(VENV)/bin/gateway sink --listen $(SINK) --maildir var/sink & sink=$$!; \
	  $(VENV)/bin/gateway serve --config $(CONFIG) $(if $(filter 0,$(shell id -u)),--user root) & serve=$$!; \
	  stop() { trap - INT TERM HUP; kill -TERM $$serve $$sink 2>/dev/null; wait $$serve $$sink; }; \
	  trap "stop; exit 130" INT TERM HUP; \
	  caught() { awk "/^SigCgt/ {print \$$2}" /proc/$$make_pid/status 2>/dev/null; }; \
	  at_start=$$(caught); \
	  make_waits() { [ -n "$$at_start" ] && [ "$$(caught)" = "$$at_start" ]; }; \
	  while kill -0 $$serve 2>/dev/null && make_waits; do sleep 0.5 & wait $$!; done; stop'

test: install system-deps
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: install
	$(VENV)/bin/ruff check gateway training tests benchmarks
	$(VENV)/bin/ruff format --check gateway training tests benchmarks
	$(VENV)/bin/mypy gateway

bench: install system-deps bench-deps
	$(PY) benchmarks/run_all.py

# Retrain the classifier: CORPUS and PUBLIC_CORPUS may name several directories (space-
# separated; PUBLIC_CORPUS= leaves the public corpus out, which a fresh clone does not have:
# `make train` says where it comes from); the feedback store is CONFIG's ([storage] dir), e.g.
# make train CONFIG=/etc/mailgate/gateway.toml CORPUS=/srv/mail/labelled PUBLIC_CORPUS=
train: install
	$(PY) -m training $(foreach c,$(PUBLIC_CORPUS),--public-corpus $(c)) \
	  $(foreach c,$(CORPUS),--corpus $(c)) --config $(CONFIG) $(if $(FEEDBACK),--feedback $(FEEDBACK))

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
