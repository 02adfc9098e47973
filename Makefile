# mini-decoders: two commands for a fresh machine.
#   make book   builds the book with every chapter executed (quick profile, on a CPU or a GPU)
#   make test   runs every test: pytest + the notebooks through nbval in the tiny profile
# Both create (or reuse) a virtual environment in .venv and install what they need into it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 is a CPU build on this project's machines. For a CUDA build use e.g.
#   make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124" test
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# Real recordings: a checkout with ../shared/realdata beside it uses that folder as a pre-filled,
# read-only download cache (tests never touch the network); otherwise $MINI_DECODERS_DATA or
# ~/.cache/mini_decoders is used and files are downloaded on first use.
SHARED_DATA := $(abspath ../shared/realdata)
DATA_ENV := $(if $(MINI_DECODERS_DATA),,$(if $(wildcard $(SHARED_DATA)),MINI_DECODERS_DATA=$(SHARED_DATA)))

# The recipe ladder (each paper's recipe, + each of this book's changes alone, the default) for every
# transformer: several hours on 2 cores, resumable. `make book` shows its table when the JSON exists.
LADDER_JSON ?= _build/ladder/ladder.json
LADDER_ENV := $(if $(wildcard $(LADDER_JSON)),MINI_DECODERS_LADDER_JSON=$(abspath $(LADDER_JSON)))

# Notebook tests (nbval) and book builds (jupyter-book) both start Jupyter kernels on local TCP
# ports that are picked free just before the kernel binds them: run at once on one machine they can
# collide, and a cell then waits on the wrong kernel until it times out. Both run under one
# machine-wide lock and take turns; the second says whom it waits for (.ci/kernel_lock.py).
KERNEL_LOCK := $(PY) .ci/kernel_lock.py --

.PHONY: book test venv clean-book ladder

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev,book,dandi]"
	# nlb-tools pins an old pandas; its evaluation and NWB reader work with the current one
	$(PY) -m pip install --quiet --no-deps "nlb-tools==0.0.4"
	touch $(STAMP)

test: $(STAMP)
	$(DATA_ENV) MINI_DECODERS_PROFILE=tiny $(KERNEL_LOCK) $(PY) -m pytest -q -p no:cacheprovider \
		--nbval-lax --nbval-cell-timeout=900 tests notebooks

book: $(STAMP)
	$(DATA_ENV) $(LADDER_ENV) $(KERNEL_LOCK) $(VENV)/bin/jupyter-book build . --keep-going
	@echo "book: open _build/html/index.html"

clean-book:
	rm -rf _build

ladder: $(STAMP)
	$(VENV)/bin/mini-decoders benchmark --recipe-ladder --models smoothing,ridge,ndt1,poyo,ndt2,mtm,vq \
		--profile quick --budget-seconds 0 --no-costs --threads 1 --json $(LADDER_JSON)
