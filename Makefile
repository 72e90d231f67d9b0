# Two commands do all the set-up (see README.md):
#   make quickstart   # venv + install + the whole pipeline on data/ (<= 10 min on 2 CPU cores)
#   make test         # venv + install + the test suite
#   make shell        # a shell with $(VENV) active, so `kdep-cache` is on PATH (exit to leave)
# Both create/refresh a virtual environment in $(VENV) (nothing is installed system-wide).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kdep-installed

.PHONY: quickstart test lint repro-small repro-budget repro-ml bench clean shell

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[lite,test,plot,timm,hf,det,svg]"
	touch $(STAMP)

quickstart: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash pipelines/quickstart.sh

# the CLI is installed in $(VENV)/bin, not on your PATH: this starts your shell with it there
# (the same as `. $(VENV)/bin/activate`; or call $(VENV)/bin/kdep-cache directly)
shell: $(STAMP)
	@echo "kdep-cache is on PATH in this shell ($(abspath $(VENV))/bin); 'exit' to leave"
	@VIRTUAL_ENV="$(abspath $(VENV))" PATH="$(abspath $(VENV))/bin:$$PATH" $${SHELL:-/bin/sh} -i

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check kdep_cache tests pipelines benchmarks

repro-small: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash pipelines/repro-small.sh

repro-budget: $(STAMP)  # SVD vs SVD+PTS at 1x and 3x the steps (issue 28), resumable
	PATH="$(abspath $(VENV))/bin:$$PATH" bash pipelines/repro-small.sh --config pipelines/repro-budget.json

repro-ml: $(STAMP)  # SVD+PTS vs SVD+PTS+ML for ResNet-18 and MobileNetV2 (issue 27), resumable
	PATH="$(abspath $(VENV))/bin:$$PATH" bash pipelines/repro-small.sh --config pipelines/repro-ml.json

clean:
	rm -rf quickstart-out repro-out .pytest_cache
