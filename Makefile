# netns-lab: set-up, lab, tests. Targets need root (namespaces, eBPF); this Makefile never calls sudo:
# on an ordinary machine run e.g. `sudo make lab`.

VENV        ?= .venv
PY          := $(VENV)/bin/python
NLAB        := $(VENV)/bin/nlab
LAB         ?= labs/nist-800-125b.yaml
LABNAME     ?= nist
PYTEST_ARGS ?=
BENCH_ARGS  ?=

.PHONY: setup lab down test bench lint

setup:
	scripts/bootstrap.sh

lab: setup
	$(NLAB) up $(LAB)
	@echo "(nlab is $(NLAB); \`. $(VENV)/bin/activate\` puts it on PATH)"

down:
	$(NLAB) down $(LABNAME)

# PYTEST_RC_FILE (used by .ci/run) receives pytest's own exit status, which make reports only as 2.
test: setup
	@rc=0; $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ -n "$(PYTEST_RC_FILE)" ]; then echo $$rc > "$(PYTEST_RC_FILE)"; fi; \
	exit $$rc

bench: setup
	$(PY) -m pytest tests/bench --benchmark-only -p no:cacheprovider \
		--benchmark-columns=min,mean,median,stddev,rounds --benchmark-sort=mean $(BENCH_ARGS)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
