# The AIGC executable book. A reader needs two commands:
#   make book   — install everything, execute every chapter (profile auto), build _build/html
#   make test   — install everything, unit tests + nbval (smoke) + a strict smoke book build
# Both are idempotent: a second run re-uses the venv, the Debian packages and the assets.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BOOK := $(VENV)/bin/aigc-book
PROFILE ?= auto
# Debian packages: the data sets and corpora, Chromium for the browser test and the PDF, a CJK font
# for figures, an emoji font for the pages' emoji (chapter 06 tokenizes one) in the PDF.
DEBS := dataset-fashion-mnist bible-kjv bible-kjv-text fortunes fortunes-zh chromium fonts-noto-cjk \
	fonts-noto-color-emoji
TORCH := torch==2.14.1 torchvision==0.29.1
NBVAL := -p no:randomly --nbval-lax --sanitize-with tests/nbval_sanitize.cfg

.PHONY: setup venv system-packages assets book run build test unit nbval smoke-book serve clean help
.PHONY: compat-venv test-compat

help:
	@echo "make book [PROFILE=smoke|cpu|gpu|auto]   execute every chapter and build _build/html"
	@echo "make test                                unit tests + nbval (smoke) + strict smoke book build"
	@echo "make setup                               only install (.venv, Debian data, offline assets)"
	@echo "make test-compat                         the lowest declared versions: unit tests + chapters 05, 06"

setup: venv system-packages assets

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH) -e '.[book]' 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	@touch $@

system-packages:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo -n "$$p "; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "setup: installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "setup: these Debian packages are missing: $$missing"; \
	  echo "setup: run  sudo apt-get update && sudo apt-get install -y $$missing"; \
	  echo "setup: (continuing: the data sets fall back to apt-get download + dpkg -x, which needs no root)"; \
	fi

assets: venv
	@$(BOOK) assets >/dev/null && echo "setup: offline assets ready in $${AIGC_DATA:-$$HOME/.cache/aigc_utils/data}"

run: setup
	$(BOOK) run --profile $(PROFILE)

build: setup
	$(BOOK) build

book: run build

unit: setup
	AIGC_OFFLINE=1 $(PY) -m pytest -q tests --ignore=tests/built

nbval: setup
	AIGC_OFFLINE=1 AIGC_PROFILE=smoke $(PY) -m pytest -q $(NBVAL) notebooks

smoke-book: setup
	AIGC_OFFLINE=1 $(BOOK) run --profile smoke
	AIGC_OFFLINE=1 $(BOOK) build
	AIGC_OFFLINE=1 $(PY) -m pytest -q tests/built

test: unit nbval smoke-book

# The lowest versions pyproject.toml declares, tested: a second venv pinned by $(COMPAT_PINS), the
# unit tests there, then two smoke chapters with an empty checkpoint cache, run in $(COMPAT_OUT) (a
# link to notebooks/) so that _build/ keeps the main venv's results. Not part of `make test`.
COMPAT_VENV ?= compat/.venv
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_PINS := compat/constraints-lowest.txt
COMPAT_CHAPTERS ?= 05 06
COMPAT_OUT := _build/compat

compat-venv: $(COMPAT_VENV)/.installed

$(COMPAT_VENV)/.installed: pyproject.toml $(COMPAT_PINS)
	@test -x $(COMPAT_PY) || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install -q --disable-pip-version-check -c $(COMPAT_PINS) -e '.[book]' 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	@touch $@

test-compat: compat-venv system-packages
	@start=$$SECONDS; status=0; \
	echo "test-compat: $$($(COMPAT_PY) -m pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(torch|torchvision|numpy|transformers|accelerate|torchmetrics|scikit-image) ' | tr -s ' ' | paste -sd, -)"; \
	$(COMPAT_VENV)/bin/aigc-book assets >/dev/null || exit 1; \
	AIGC_OFFLINE=1 AIGC_COMPAT=1 $(COMPAT_PY) -m pytest -q tests --ignore=tests/built || status=1; \
	echo "test-compat: unit tests done at $$((SECONDS - start)) s"; \
	rm -rf $(COMPAT_OUT) && mkdir -p $(COMPAT_OUT) && ln -s ../../notebooks $(COMPAT_OUT)/notebooks; \
	(cd $(COMPAT_OUT) && AIGC_OFFLINE=1 AIGC_CACHE=$(CURDIR)/$(COMPAT_OUT)/cache \
	  $(CURDIR)/$(COMPAT_VENV)/bin/aigc-book run --profile smoke $(COMPAT_CHAPTERS)) || status=1; \
	AIGC_COMPAT_METRICS=$(COMPAT_OUT)/_build/metrics $(COMPAT_PY) -m pytest -q -k compat_chapters tests/test_compat.py || status=1; \
	echo "test-compat: $$([ $$status = 0 ] && echo passed || echo FAILED) in $$((SECONDS - start)) s"; \
	exit $$status

serve:
	$(PY) -m http.server --directory _build/html 8000

clean:
	rm -rf _build
