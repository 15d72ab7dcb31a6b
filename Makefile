# netns-lab: set-up, lab, tests. Targets need root (namespaces, eBPF); this Makefile never calls sudo:
# on an ordinary machine run e.g. `sudo make lab`.

VENV        ?= .venv
PY          := $(VENV)/bin/python
NLAB        := $(VENV)/bin/nlab
LAB         ?= labs/nist-800-125b.yaml
LABNAME     ?= nist
PYTEST_ARGS ?=
# Test files run in TEST_JOBS processes, a file's tests together in one (its module-scoped lab is
# built once); every lab a test makes has a name of its own, so files do not meet.
TEST_JOBS ?= 2
BENCH_ARGS  ?=
# QUICK=1: fewer rounds and sizes (a look in under 3 minutes, not figures to quote). BENCH_OUT: where
# the results (one JSON per module) and plots go, default bench-results/ in the checkout.
QUICK       ?=
BENCH_OUT   ?= bench-results
PREFIX      ?= /usr/local

.PHONY: setup lab down test bench lint install-cli uninstall-cli

setup:
	scripts/bootstrap.sh

lab: setup
	$(NLAB) up $(LAB)
	@echo "(nlab is $(NLAB): \`. $(VENV)/bin/activate\` puts it on PATH, \`sudo make install-cli\` links $(PREFIX)/bin/nlab to it)"

# Opt-in, never done by setup/lab/test: a link in $(PREFIX)/bin to this checkout's nlab. It
# replaces nothing it did not make (a link to another checkout needs FORCE=1).
install-cli: setup
	@link="$(PREFIX)/bin/nlab"; target="$(CURDIR)/$(NLAB)"; \
	if [ -e "$$link" ] || [ -L "$$link" ]; then \
		current=$$(readlink "$$link" || true); \
		if [ "$$current" != "$$target" ] && [ -z "$(FORCE)" ]; then \
			echo "install-cli: $$link exists ($${current:-not a link}); FORCE=1 replaces it" >&2; exit 2; \
		fi; \
	fi; \
	mkdir -p "$(PREFIX)/bin" && ln -sfn "$$target" "$$link" && echo "install-cli: $$link -> $$target"

uninstall-cli:
	@link="$(PREFIX)/bin/nlab"; \
	if [ "$$(readlink "$$link" 2>/dev/null)" = "$(CURDIR)/$(NLAB)" ]; then rm "$$link" && echo "uninstall-cli: removed $$link"; \
	else echo "uninstall-cli: $$link is not a link to this checkout: left alone"; fi

down:
	$(NLAB) down $(LABNAME)

# PYTEST_RC_FILE (used by .ci/run) receives pytest's own exit status, which make reports only as 2.
test: setup
	@rc=0; $(PY) -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS) || rc=$$?; \
	if [ -n "$(PYTEST_RC_FILE)" ]; then echo $$rc > "$(PYTEST_RC_FILE)"; fi; \
	exit $$rc

bench: setup
	BENCH_QUICK=$(QUICK) BENCH_OUT=$(BENCH_OUT) $(PY) -m pytest tests/bench --benchmark-only -p no:cacheprovider \
		--benchmark-columns=min,mean,median,stddev,rounds --benchmark-sort=mean $(BENCH_ARGS)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
