# Two commands: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
RUNTIME = $(VENV)/.runtime
STAMP   = $(VENV)/.installed

# Python's bytecode cache on, whatever the environment says (PYTHONDONTWRITEBYTECODE=1 was set
# on the test machine): without it every bridge process the tests start compiles the whole
# tree from source (~0.4 s of CPU each) and every test worker rewrites every test module's
# asserts anew (~8 s each). The caches are git-ignored.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test check test-stress lint typecheck unit install system-deps node-deps web-deps bench bench-smoke soak clean \
	quality quality-deps

$(PY):
	$(PYTHON) -m venv $(VENV)

# `make run` installs the runtime only; `make test` adds the test tooling (the dev extra).
$(RUNTIME): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(RUNTIME)
	$(VENV)/bin/webrtc-bridge

# Debian packages the tests drive for real (Chromium for the browser test; GStreamer's
# webrtcbin, driven from Debian's python3, for the RSA-certificate DTLS peer; espeak-ng and sox
# for the quality test's speech; SIPp (sip-tester) and socat, its TLS hop, play Meta's SIP
# side). Installed when missing and we are root on a Debian-like system; otherwise those tests
# skip (or fail under CI).
SYSTEM_PKGS = chromium prometheus coturn redis-server python3-venv curl jq espeak-ng sox \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-good gstreamer1.0-plugins-base \
	gstreamer1.0-nice gstreamer1.0-tools python3-gi gir1.2-gstreamer-1.0 \
	gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1 sip-tester socat \
	baresip kamailio kamailio-tls-modules twinkle-console
system-deps:
	@missing=""; for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (need root and apt-get); their tests will skip"; fi; \
	fi

# The libwebrtc peer (Node + @roamhq/wrtc, locked in tests/interop/node/package-lock.json).
NODE_STAMP = tests/interop/node/node_modules/.installed
$(NODE_STAMP): tests/interop/node/package-lock.json
	@if command -v npm >/dev/null; then \
	  cd tests/interop/node && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the libwebrtc test will skip"; fi
node-deps: $(NODE_STAMP)

# The report page's charting library (uPlot, locked in web/charts/package-lock.json): its build
# is copied beside the page (web/uPlot.iife.min.js, web/uPlot.min.css, committed so a wheel built
# from a checkout ships it; tests/unit/test_report_page.py checks they are the locked version's).
web-deps:
	cd web/charts && npm ci --no-audit --no-fund --loglevel=error
	cp web/charts/node_modules/uplot/dist/uPlot.iife.min.js web/charts/node_modules/uplot/dist/uPlot.min.css web/

lint: $(STAMP)
	$(VENV)/bin/ruff check bridge tests bench examples pipecat_whatsapp_bridge
	$(VENV)/bin/ruff format --check bridge tests bench examples pipecat_whatsapp_bridge

typecheck: $(STAMP)
	$(VENV)/bin/mypy bridge

# The suite on several workers (pytest-xdist: each test isolated, its own ports from its
# worker's block, tests/support/ports.py), then the `serial` tests alone: their assertions need
# the CPU to themselves (PESQ, delay, CPU figures). Most tests wait on sockets and timers, so
# more workers than cores pays. Idle workers take queued tests from busy ones (worksteal): the
# long tests (a schemathesis run, the image replay) no longer leave one worker a tail of
# queued tests while the others idle. docs/development.md.
TEST_WORKERS ?= 4
# The serial part collects only the files that mark a test serial (a whole collection is
# ~11 s); tests/conftest.py refuses a serial test marked any other way, which would run in
# neither part.
SERIAL_FILES = $(shell grep -rl --include='test_*.py' 'mark\.serial' tests)
PYTEST_ARGS ?=
# The slowest tests named at the end of each part: where the 10-minute budget goes.
SLOWEST = --durations=15 --durations-min=4
unit: $(STAMP) system-deps node-deps
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not serial" $(SLOWEST) $(PYTEST_ARGS)
	$(PY) -m pytest -q -p no:xdist -m serial $(SERIAL_FILES) $(SLOWEST) $(PYTEST_ARGS)

test: system-deps node-deps lint typecheck unit

# The inner loop (docs/development.md): lint, types and the unit tests, on the workers.
check: $(STAMP)
	$(VENV)/bin/ruff check bridge tests bench examples pipecat_whatsapp_bridge
	$(VENV)/bin/ruff format --check bridge tests bench examples pipecat_whatsapp_bridge
	$(VENV)/bin/mypy bridge
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests/unit $(PYTEST_ARGS)

# The whole suite with a noisy neighbour: one core kept busy by a burner this starts and stops
# (by its pid) around `make unit`.
test-stress: system-deps node-deps lint typecheck
	$(PY) -m tests.support.burner -- $(MAKE) --no-print-directory unit

# The benchmark: the bridge (sim engine; Cloud API engine against bench/meta.py) vs a bare
# aiortc echo server, N concurrent calls (see bench/run.py).
bench: $(STAMP)
	$(PY) -m pip install --quiet matplotlib
	$(PY) -m bench.run $(BENCH_ARGS)

# The soak: 20 calls for 10 minutes on the bridge, a timeline of frames on time, CPU, RSS and
# fds (bench/results/<stamp>-soak.json). Override with SOAK_ARGS="--soak 1 --calls 5".
soak: $(STAMP)
	$(PY) -m bench.run --soak 10 --calls 20 $(SOAK_ARGS)

# The quality bench (issue 23): speech (espeak-ng, resampled by sox) through real bridges under
# seeded network profiles, from aiortc peers and a real Chromium, PESQ-WB (the `pesq` package,
# the `quality` extra) next to an ideal receiver fed the same packets; `--encoder-curve` scores
# libopus settings offline. Writes
# bench/results/quality-<date>.json. QUALITY_ARGS="--quick" for a short seeded run.
QUALITY_PKGS = espeak-ng sox chromium
quality-deps:
	@missing=""; for p in $(QUALITY_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (need root and apt-get)"; exit 1; fi; \
	fi
	@$(PY) -c "import pesq" 2>/dev/null || $(PY) -m pip install --quiet 'pesq>=0.0.4'

quality: $(STAMP) quality-deps
	$(PY) -m bench.quality $(QUALITY_ARGS)

bench-smoke: $(STAMP)
	$(PY) -m bench.run --smoke --out $${TMPDIR:-/tmp}/bench-smoke

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
