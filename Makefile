# The two commands a newcomer needs (see README):
#   make lab    set up .venv if needed, write your exercise copies, then open JupyterLab on the welcome exercise
#   make test   set up .venv if needed, then run every test (pytest on tests/ and nbval on notebooks/)
# Set-up runs only when binder/requirements-lock.txt or pyproject.toml changed since the last install.
# Binder and conda install binder/requirements.txt instead: the same lock plus PyTorch's CPU wheel index.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sustainlab-installed
LAB_ARGS ?=

.PHONY: lab test setup course notebooks bench lock clean help

help:
	@echo "make lab        open your exercises (exercises/) in JupyterLab (sets up .venv on first use)"
	@echo "make test       run every test: package tests, notebooks under nbval, browser test"
	@echo "make course     run every notebook headless; table of time and peak memory vs budget"
	@echo "make notebooks  re-execute every notebook and save its outputs (after changing code)"
	@echo "make bench      run the benchmark scripts (results in build/benchmarks/)"
	@echo "make lock       rewrite binder/requirements-lock.txt from the installed environment"

setup: $(STAMP)

LOCK   := binder/requirements-lock.txt

$(STAMP): $(LOCK) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the course environment into $(VENV)/ (first time only: a few minutes)..."
	# torch first and on its own: an exact version takes the small CPU wheel where one is on disk.
	$(PY) -m pip install --quiet --disable-pip-version-check "$$(grep -E '^torch==' $(LOCK))"
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(LOCK)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name sustainlab --display-name "Python (sustainlab)" >/dev/null
	@touch $(STAMP)

# JupyterLab refuses to run as root unless told; containers and CI often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

# Learners work in their own copies: `sustainlab exercises` writes exercises/ (git-ignored) from notebooks/ with the
# solutions removed, adding notebooks it lacks and never touching one that exists. JupyterLab opens on the welcome
# exercise with the course's server settings (jupyter-config/); the solutions stay in notebooks/, one folder away.
COURSE_CONFIG := $(CURDIR)/jupyter-config
WELCOME       := exercises/00_welcome.ipynb

lab: $(STAMP)
	$(VENV)/bin/sustainlab exercises --src notebooks --dest exercises
	JUPYTER_CONFIG_PATH="$(COURSE_CONFIG)$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" $(VENV)/bin/jupyter lab \
	  --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/$(WELCOME) $(ROOT_FLAG) $(LAB_ARGS)

test: $(STAMP)
	$(PY) -m pytest

course: $(STAMP)
	$(VENV)/bin/sustainlab run-all

notebooks: $(STAMP)
	$(VENV)/bin/sustainlab run-all --save

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# Keeps the header comment, pins every installed distribution (torch first, without its local +cpu label).
lock: $(STAMP)
	@{ grep '^#' $(LOCK); \
	   $(PY) -m pip freeze --exclude-editable | sed 's/+cpu//' | grep -i '^torch=='; \
	   $(PY) -m pip freeze --exclude-editable | grep -vi '^torch==' | sort -f; } > $(LOCK).new
	@mv $(LOCK).new $(LOCK)
	@echo "$(LOCK) rewritten; review with git diff"

clean:
	rm -rf $(VENV) build .pytest_cache
