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
# Debian packages: the data sets and corpora, Chromium for the browser test, a CJK font for figures.
DEBS := dataset-fashion-mnist bible-kjv bible-kjv-text fortunes fortunes-zh chromium fonts-noto-cjk
TORCH := torch==2.14.1 torchvision==0.29.1
NBVAL := -p no:randomly --nbval-lax --sanitize-with tests/nbval_sanitize.cfg

.PHONY: setup venv system-packages assets book run build test unit nbval smoke-book serve clean help

help:
	@echo "make book [PROFILE=smoke|cpu|gpu|auto]   execute every chapter and build _build/html"
	@echo "make test                                unit tests + nbval (smoke) + strict smoke book build"
	@echo "make setup                               only install (.venv, Debian data, offline assets)"

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

serve:
	$(PY) -m http.server --directory _build/html 8000

clean:
	rm -rf _build
