# The single entry point. `make test` and `make demo` set up .venv first if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup test demo env clean-venv

$(STAMP): setup.py tools/setup_env.py tools/detectron2_offline_fallback.py tools/detectron2_0.6_constraints.txt
	$(PYTHON) tools/setup_env.py --venv $(VENV)
	@touch $(STAMP)

## setup: create/refresh .venv (torch, detectron2, this package, test tools)
setup:
	$(PYTHON) tools/setup_env.py --venv $(VENV)
	@touch $(STAMP)

## test: the whole test suite
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## demo: the main job on its embedded default: train, evaluate and visualize on synthetic data (CPU, ~8 min)
demo: $(STAMP)
	$(PY) tools/main_job.py $(DEMO_ARGS)

## env: what a bug report needs
env: $(STAMP)
	$(PY) -m mask2former_dinat.env

clean-venv:
	rm -rf $(VENV)
