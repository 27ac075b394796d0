# Quick start:  make demo   (train on DATA, show predictions; then make serve)   and   make test
PYTHON ?= python3
VENV   ?= .venv
# Local photos and Keras weight files beside the checkout (as the tests use) when they are
# there, so `make demo` runs offline; otherwise tf_flowers and the weights are downloaded.
SHARED ?= ../shared
DATA   ?= $(if $(wildcard $(SHARED)/data/flowers5),$(SHARED)/data/flowers5,tfds:tf_flowers)
OUT    ?= runs/demo
BACKBONE ?= mobilenet_v2_0.35
# A folder of Keras weight files to use offline (linked into a local KERAS_HOME).
WEIGHTS ?= $(if $(wildcard $(SHARED)/weights/*.h5),$(SHARED)/weights)

BIN := $(VENV)/bin
ifneq ($(WEIGHTS),)
export KERAS_HOME := $(CURDIR)/.keras-home
endif

.PHONY: demo serve test docs install dev clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed
dev: $(BIN)/.installed-dev

demo: $(BIN)/.installed
ifneq ($(WEIGHTS),)
	mkdir -p .keras-home/models
	for f in $(abspath $(WEIGHTS))/*.h5; do ln -sf "$$f" .keras-home/models/; done
endif
	@if grep -qs '"complete"' $(OUT)/run.json; then \
	  echo "$(OUT) is already trained (delete it or set OUT=... to train again)"; \
	else $(BIN)/transferkit train $(DATA) --out $(OUT) --backbone $(BACKBONE); fi
	$(BIN)/transferkit predict $(OUT) --samples 8
	@echo "Web demo of this run: make serve$(if $(filter-out runs/demo,$(OUT)), OUT=$(OUT))   (transferkit serve $(OUT), then open http://127.0.0.1:7860)"

# The web demo of the run `make demo` trained (or OUT=any run or export).
serve: $(BIN)/.installed
	$(BIN)/transferkit serve $(OUT)

# Two workers, one test file each at a time: the suite waits on subprocesses, servers
# and single-threaded graph tracing, so two processes keep both cores busy. A file's
# module fixtures (trained runs, exports) are built once; the session's trained runs are
# built once for both workers (tests/conftest.py). The 20 slowest tests are listed.
test: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=20

# The documentation site (docs/, mkdocs.yml) → site/index.html; broken links fail.
docs: $(BIN)/.installed-dev
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .keras-home runs site
