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

# The course website has an environment of its own, so the course's .venv (make demo, make test) stays as it is.
# sphinx-mathjax-offline brings MathJax 3.2.2; the site serves it itself (site/_ext/offline_mathjax.py).
SITE_VENV  := .venv-site
SITE_STAMP := $(SITE_VENV)/.installed
SITE_PINS  := sphinx==9.0.4 docutils==0.22.4 myst-parser==5.2.0 myst-nb==1.4.0 sphinx-book-theme==1.4.0 \
              pydata-sphinx-theme==0.20.0 sphinx-copybutton==0.5.2 sphinx-mathjax-offline==0.0.2

.PHONY: setup test unit notebooks lint demo lab bench clean clean-notebooks student site site-check

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(PINS)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

test: setup lint unit site-check notebooks

unit: setup
	TQDM_DISABLE=1 $(BIN)/python -m pytest -q tests

# Execute every chapter and every student copy top to bottom; in the chapters, cells tagged
# nbval-check-output must print what was committed (student copies have no outputs to compare).
notebooks: setup
ifneq ($(NOTEBOOKS),)
	TQDM_DISABLE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider $(NOTEBOOKS)
endif

lint: setup
	$(BIN)/ruff check imagen_tutorial tests bench tools site

demo: setup
	$(BIN)/python -m imagen_tutorial demo

lab: setup
	$(BIN)/jupyter lab chapters/

bench: setup
	$(BIN)/python bench/attention.py
	$(BIN)/python bench/sampling.py
	$(BIN)/python bench/train_step.py

# The course as a website in _build/html, from the notebooks' stored outputs (nothing is executed); every warning,
# a broken link or a missing image among them, fails the build. -E re-reads every page, so none is skipped.
site: $(SITE_STAMP)
	$(SITE_VENV)/bin/sphinx-build -W --keep-going -E -q -c site -b html . _build/html
	@echo "site: built _build/html; open _build/html/index.html (or: python3 -m http.server -d _build/html)"

# Open every page in headless Chromium with the network refused (skipped, saying so, without chromium).
site-check: site
	$(SITE_VENV)/bin/python tools/check_site.py --site _build/html

$(SITE_STAMP): Makefile
	@test -x $(SITE_VENV)/bin/python || $(PYTHON) -m venv $(SITE_VENV)
	$(SITE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(SITE_PINS)
	@touch $@

clean:
	rm -rf outputs .pytest_cache data/FashionMNIST _build

student: setup
	$(BIN)/python tools/make_student.py

clean-notebooks: setup
	$(BIN)/python tools/clean_notebooks.py
