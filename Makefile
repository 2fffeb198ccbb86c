# The course's commands. Each target creates .venv and installs the pinned environment if it is missing,
# so on a fresh machine `make test` or `make demo` is the only step.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Exact pins for a reproducible course environment (pyproject.toml keeps ranges for other installs).
PINS   := torch==2.14.1 torchvision==0.29.1 numpy==2.4.6 pillow==13.0.0 matplotlib==3.11.2 tqdm==4.70.1 \
          pytest==9.2.0 nbval==0.11.0 jupyterlab==4.6.6 ruff==0.17.6

NOTEBOOKS := $(wildcard chapters/[0-9]*.ipynb chapters/student/[0-9]*.ipynb)

.PHONY: setup test unit notebooks lint demo lab bench clean clean-notebooks student

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(PINS)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

test: setup lint unit notebooks

unit: setup
	TQDM_DISABLE=1 $(BIN)/python -m pytest -q tests

# Execute every chapter and every student copy top to bottom; in the chapters, cells tagged
# nbval-check-output must print what was committed (student copies have no outputs to compare).
notebooks: setup
ifneq ($(NOTEBOOKS),)
	TQDM_DISABLE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider $(NOTEBOOKS)
endif

lint: setup
	$(BIN)/ruff check imagen_tutorial tests bench tools

demo: setup
	$(BIN)/python -m imagen_tutorial demo

lab: setup
	$(BIN)/jupyter lab chapters/

bench: setup
	$(BIN)/python bench/attention.py
	$(BIN)/python bench/sampling.py
	$(BIN)/python bench/train_step.py

clean:
	rm -rf outputs .pytest_cache data/FashionMNIST

student: setup
	$(BIN)/python tools/make_student.py

clean-notebooks: setup
	$(BIN)/python tools/clean_notebooks.py
