# mini-decoders: two commands for a fresh machine.
#   make book   builds the book with every chapter executed (quick profile, on a CPU or a GPU)
#   make test   runs every test: pytest + the notebooks through nbval in the tiny profile
# Both create (or reuse) a virtual environment in .venv and install what they need into it.
# The published book is complete after three more, each run once before `make book` (separate make
# commands: `make book` looks for what they wrote when it starts):
#   make data             the small real recordings, verified (chapters 4 and 9)
#   make ladder           the recipe ladder of every transformer (chapters 3-7; hours)
#   make benchmark-json   every model side by side, with the transfer experiment (chapter 8; ~1 h)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 is a CPU build on this project's machines. For a CUDA build use e.g.
#   make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124" test
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# Real recordings: $MINI_DECODERS_DATA when it is set; else a checkout with ../shared/realdata beside
# it uses that folder as a pre-filled, read-only download cache (tests never touch the network); else
# DATA_CACHE once `make data` has filled it; else ~/.cache/mini_decoders, downloaded on first use.
SHARED_DATA := $(abspath ../shared/realdata)
DATA_CACHE ?= _build/data
DATA_ENV := $(if $(MINI_DECODERS_DATA),,$(if $(wildcard $(SHARED_DATA)),MINI_DECODERS_DATA=$(SHARED_DATA),$(if \
	$(wildcard $(DATA_CACHE)),MINI_DECODERS_DATA=$(abspath $(DATA_CACHE)))))

# Names come from the package's registries (the one list of each), never typed here. `=`, not `:=`:
# they are read when a recipe runs, after the virtual environment that imports the package exists.
ALL_MODELS = $(shell $(PY) -c "from mini_decoders.models.registry import MODELS; print(','.join(MODELS))")
# the models with a paper recipe (the ladder adds the classic baseline each is judged against)
PAPER_MODELS = $(shell $(PY) -c "from mini_decoders.models.registry import model_classes; \
	print(','.join(name for name, model in model_classes().items() if model.PAPER))")
SMALL_DATASETS = $(shell $(PY) -c \
	"from mini_decoders.data.registry import DataEntry, names; print(' '.join(names(DataEntry)))")

# The recipe ladder (each paper's recipe, + each of this book's changes alone, the default) for every
# transformer: several hours on 2 cores, resumable. `make book` shows its table when the JSON exists.
LADDER_JSON ?= _build/ladder/ladder.json
LADDER_ENV := $(if $(wildcard $(LADDER_JSON)),MINI_DECODERS_LADDER_JSON=$(abspath $(LADDER_JSON)))

# Chapter 8's side-by-side table: every registered model in the quick profile, and the transfer
# experiment of the models that adapt, from the one command a reader can rerun (resumable). About an
# hour on 2 cores: each model's quick recipe (<= 5 min of training each), the cost sweeps, then 150 s
# per pretraining in the transfer experiment.
# `make book` shows it, with its provenance, when the JSON exists; else chapter 8 runs every model
# itself, and the run cache hands it the runs earlier chapters trained on the same sessions.
BENCHMARK_JSON ?= _build/benchmark/benchmark.json
BENCHMARK_ENV := $(if $(wildcard $(BENCHMARK_JSON)),MINI_DECODERS_BENCHMARK_JSON=$(abspath $(BENCHMARK_JSON)))

# The run cache (mini_decoders/run_cache.py): a run with the same model, recipe, config, seed and
# session contents is trained once and copied to whoever asks for it again, in the book's chapters,
# the benchmark and the ladder. `make clean-book` empties it with the rest of _build.
RUN_CACHE ?= _build/run_cache
CACHE_ENV := MINI_DECODERS_RUN_CACHE=$(abspath $(RUN_CACHE))

# Notebook tests (nbval) and book builds (jupyter-book) both start Jupyter kernels on local TCP
# ports that are picked free just before the kernel binds them: run at once on one machine they can
# collide, and a cell then waits on the wrong kernel until it times out. Both run under one
# machine-wide lock and take turns; the second says whom it waits for (.ci/kernel_lock.py).
KERNEL_LOCK := $(PY) .ci/kernel_lock.py --

.PHONY: book test venv clean-book ladder benchmark-json data

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

# The chapters execute side by side first, JOBS at a time (default: one per CPU core, each kernel on
# cores/JOBS threads), into the execution cache jupyter-book reads; the build then executes none and
# only renders. `make book JOBS=1` executes them one at a time. A chapter that fails stops the build
# here; the ones that ran stay cached, so the rerun executes only what failed.
JOBS ?=
EXECUTE_CHAPTERS ?= $(PY) book/execute_chapters.py
BOOK_ENV = $(DATA_ENV) $(LADDER_ENV) $(BENCHMARK_ENV) $(CACHE_ENV)

book: $(STAMP)
	$(BOOK_ENV) $(KERNEL_LOCK) $(EXECUTE_CHAPTERS) $(if $(JOBS),--jobs $(JOBS))
	$(BOOK_ENV) $(KERNEL_LOCK) $(VENV)/bin/jupyter-book build . --keep-going
	@# each chapter's measured run time beside the budget its introduction states
	-$(PY) benchmarks/book_times.py
	@echo "book: open _build/html/index.html"

clean-book:
	rm -rf _build

ladder: $(STAMP)
	$(if $(PAPER_MODELS),,$(error no model with a paper recipe read from the registry with $(PY)))
	$(CACHE_ENV) $(VENV)/bin/mini-decoders benchmark --recipe-ladder --models $(PAPER_MODELS) \
		--profile quick --budget-seconds 0 --no-costs --threads 1 --json $(LADDER_JSON)

benchmark-json: $(STAMP)
	$(if $(ALL_MODELS),,$(error no model name read from mini_decoders/models/registry.py with $(PY)))
	$(CACHE_ENV) $(VENV)/bin/mini-decoders benchmark --profile quick --models $(ALL_MODELS) --transfer --json $(BENCHMARK_JSON)

# Each file is checked against the sha256 the data registry pins; a verified file is not fetched again.
data: $(STAMP)
	names="$(SMALL_DATASETS)"; test -n "$$names" || { echo "no small dataset read from the data registry"; exit 1; }; \
	for name in $$names; do $(VENV)/bin/mini-decoders data fetch $$name --cache $(DATA_CACHE) || exit 1; done
