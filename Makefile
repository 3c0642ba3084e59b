# p3dlab developer and student entry points. Everything runs inside .venv, created on first use.
#
# Students: `make lab` installs torch's CPU build (pinned, from PyTorch's CPU wheel index, whose
# 2.13.0+cpu outranks the default index's 2.13.0: on Linux that is a CUDA build of several GB) and
# only what the lessons need (.[lab]). Developers: `make test` (and every test target) adds the dev
# tools (.[dev]: pytest, Playwright, nbgrader, ...).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LAB_STAMP := $(VENV)/.p3dlab-lab
DEV_STAMP := $(VENV)/.p3dlab-dev
TORCH  := torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PORT   ?= 8888
# JupyterLab refuses to run as root (containers, CI machines) unless told to
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# NO_BROWSER=1: print the address instead of opening a browser (a remote machine, a container)
BROWSER_FLAG := $(if $(NO_BROWSER),--no-browser,)

# Numba's default threading layer (GNU OpenMP) runs p3dlab's kernels; torch brings its own copy of
# libgomp, so a process has two OpenMP pools, and idle threads must soon sleep rather than spin
# against each other. p3dlab sets GOMP_SPINCOUNT=1000 and OMP_WAIT_POLICY=PASSIVE when it is
# imported (p3dlab/runtime/threads.py), which reaches torch's pool only when torch loads after
# p3dlab: `make lab` sets them for its kernels, whose lessons import torch first, unless either is
# in the environment already. Forked workers run serial builds of the kernels (kernels/parallel_jit.py).
WAIT_ENV := $(if $(OMP_WAIT_POLICY)$(GOMP_SPINCOUNT),,OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=1000)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup lab-setup torch lab test lint unit cudasim lessons course release browser binder hub book bench fuzz gpu-check clean

$(PY):
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "p3dlab: '$(PYTHON) -m venv' failed. On Debian or Ubuntu install it with"; \
	  echo "  sudo apt install python3-venv"; \
	  echo "(elsewhere, install Python 3.10 or newer from python.org), then run make again."; exit 1; }

## torch's CPU build, pinned (a no-op when the venv has a torch already); then its dependencies,
## from the default index only (the CPU index mirrors them, but need not be asked for each).
torch: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || { echo "Installing $(TORCH) (CPU build) ..."; \
	  $(PY) -m pip install --progress-bar on --no-deps $(TORCH) --extra-index-url $(TORCH_INDEX) && \
	  $(PY) -m pip install --progress-bar on $(TORCH); }

## What the lessons need, nothing more.
lab-setup: $(LAB_STAMP)

$(LAB_STAMP): pyproject.toml | torch
	@echo "Installing p3dlab and JupyterLab ..."
	$(PY) -m pip install --progress-bar on -e '.[lab]'
	@touch $@

## The lessons' packages and the developer tools.
setup: $(DEV_STAMP)

$(DEV_STAMP): pyproject.toml $(LAB_STAMP)
	$(PY) -m pip install -q -e '.[lab,dev]'
	@touch $@

## Start JupyterLab on the lessons: it opens a browser, or prints its address with a login token
## (http://127.0.0.1:$(PORT)/lab?token=...) with NO_BROWSER=1.
lab: lab-setup
	$(WAIT_ENV) $(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=lessons $(BROWSER_FLAG) $(ROOT_FLAG)

## Lint, unit tests, CUDA-simulator kernel tests, the lessons in fast mode through nbgrader's round
## trip, the widgets in a real Chromium (skipped when /usr/bin/chromium is missing) and the Binder
## install reproduced.
UNIT_WORKERS ?= 2

test: setup lint unit cudasim course browser binder

lint: setup
	$(VENV)/bin/ruff check p3dlab kernels tests benchmarks
	$(VENV)/bin/ruff format --check p3dlab kernels tests benchmarks

## Two processes (pytest-xdist): most of a fresh clone's unit run is Numba compiling kernels on one
## core. Tests are handed out one by one (--dist load; its groups do not work with pytest 9).
## UNIT_WORKERS=0 runs them in this process.
unit: setup
	$(WAIT_ENV) $(PY) -m pytest -q -n $(UNIT_WORKERS) --dist load \
	  -m "not cudasim and not browser and not binder and not course and not hub" tests

## Only the files with simulator tests (the cudasim mark, or the conftest's ``gpu`` fixture):
## collecting the whole suite under the simulator took minutes.
cudasim: setup
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q -m cudasim $$(grep -lE 'pytest.mark.cudasim|def test_.*\bgpu\b' tests/test_*.py)

## The lessons with their solutions (course/source) under nbval, in fast mode.
lessons: setup
	P3DLAB_FAST=1 $(PY) -m pytest -q -p no:cacheprovider --nbval-lax course/source

## nbgrader's round trip for every lesson: generate_assignment, then autograde three submissions.
course: setup
	$(PY) -m pytest -q -s -p no:cacheprovider -m course tests/test_course.py

## Regenerate the student versions in lessons/ from course/source (CI fails when they drift).
release: setup
	$(PY) -m p3dlab.classroom release

## JupyterLab + Playwright + Debian Chromium; screenshots and timings in test-artifacts/browser.
browser: setup
	$(PY) -m pytest -q -rs -s -p no:cacheprovider -m browser tests/test_browser.py

## Reproduce the Binder build (binder/ files) in a fresh venv and run one lesson in it.
binder: setup
	$(PY) -m pytest -q -rs -p no:cacheprovider -m binder tests/test_binder.py

## A real JupyterHub on loopback (deploy/jupyterhub/jupyterhub_config.py): five students log in and run a
## lesson at once in their own servers. JupyterHub from .[hub]; configurable-http-proxy from npm into
## node_modules/ (git-ignored; Node.js required).
hub: setup
	$(PY) -m pip install --progress-bar on -e '.[hub]'
	@test -x node_modules/.bin/configurable-http-proxy || \
	  npm install --no-save --no-package-lock --no-audit --no-fund configurable-http-proxy@5
	$(PY) -m pytest -q -s -p no:cacheprovider -m hub tests/test_hub.py

## Execute every lesson at full size; HTML with outputs, and each lesson's time and peak memory against
## its budget (3 min, 1.2 GB) in book/timings.md. STRICT=1: fail when a lesson is over budget.
book: setup
	$(PY) -m p3dlab.classroom book course/source book $(if $(STRICT),--strict,)

## Long fuzzing of the file readers (CI runs 5,000 cases; this runs 4 x P3DLAB_FUZZ_EXAMPLES).
fuzz: setup
	P3DLAB_FUZZ_EXAMPLES=$${P3DLAB_FUZZ_EXAMPLES:-50000} $(PY) -m pytest -q tests/test_io_fuzz.py

## Benchmarks: table printed and written to bench-results/. K=name,...: only the benchmarks whose function name contains one of these.
bench: setup
	$(PY) -m benchmarks.run $(if $(K),-k $(K),)

## On a machine with an NVIDIA GPU: install the CUDA extra (CUDA 13 drivers; CUDA=cuda12 for CUDA 12),
## then every CUDA kernel against the CPU kernels on random scenes, with a timing table. A CUDA build
## of torch must be installed (README, "On an NVIDIA GPU"). DRY=1: tiny scenes on the simulator.
CUDA ?= cuda
gpu-check: setup
	$(if $(DRY),,$(PY) -m pip install -e '.[$(CUDA)]')
	$(PY) -m benchmarks.gpu_check $(if $(DRY),--dry-run,)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache bench-results book test-artifacts
