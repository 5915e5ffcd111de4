# The README's two commands: `make run` and `make test`. Both bootstrap .venv on first use; `make docs` builds the
# documentation site (docs/, mkdocs.yml) into site/.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TYPED_CORE := sketchmind

.PHONY: run test lint typecheck unit docs bench bench-detail fuzz load golden policy policy-v1 results demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Torch comes first and by exact version, so pip takes the builds on local disk. The rest is held to
# constraints.txt, the versions the tests last passed with (OpenCV 5.1 moved label glyphs by a pixel).
$(STAMP): $(BIN)/python pyproject.toml setup.py constraints.txt
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,train,demo,mcp]'
	touch $(STAMP)

# A VSP map the default policy never saw, asked the way frozen-lake puzzles are asked.
DEMO_IMAGE := data/vsp-maze-examples/maps/level4/img/0.png
DEMO_QUESTION := This frozen-lake map has 4 rows and 4 columns, numbered from 1 at the top-left. The elf is the player, \
the wrapped present is the goal, and the blue ice patches are holes. Find an action plan that takes the player to the \
goal without falling into any hole, using the fewest moves. Moves are L (left), R (right), U (up) and D (down); moving \
off the edge of the map has no effect. Give your answer as "Action plan: <PLAN>", e.g. "Action plan: L,L,R,U,D".

run: $(STAMP)
	$(BIN)/sketchmind solve $(DEMO_IMAGE) '$(DEMO_QUESTION)' --save runs/demo
	$(BIN)/sketchmind show runs/demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy $(TYPED_CORE)

unit: $(STAMP)
	$(BIN)/pytest -n 2

test: lint typecheck unit

# The docs site with its API reference (mkdocstrings reads the docstrings, imports nothing). --strict: a broken
# link or anchor, a page left out of the nav or a reference that does not resolve fails the build (and CI).
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Every promised ratio in one run (about 3 minutes); rewrites the table in docs/performance.md.
bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python tools/bench.py --write docs/performance.md

# The detailed tables behind the suite's rows.
bench-detail: $(STAMP)
	$(BIN)/python tools/bench_canvas.py
	HF_HUB_OFFLINE=1 $(BIN)/python tools/bench_hf.py
	HF_HUB_OFFLINE=1 $(BIN)/python tools/bench_agent.py
	HF_HUB_OFFLINE=1 $(BIN)/python tools/bench_latent.py

# The long runs CI leaves out: ~102k model outputs and 1k odd images (about 25 minutes), plus 20k
# coverage-guided inputs when atheris is installed (`pip install -e '.[fuzz]'`, needs clang).
fuzz: $(STAMP)
	nice -n 19 $(BIN)/python tools/fuzz.py --write docs/reliability.md $$($(BIN)/python -c 'import atheris' 2>/dev/null && echo --atheris 20000)

# `sketchmind serve` under 4 and 16 concurrent clients for a minute each (memory sampled every 0.5 s), then 16 clients
# against a server that answers one request at a time: the batching throughput ratio and both p99s are printed.
# Rewrites the load table in docs/reliability.md (`make load LOAD_WRITE=` only prints).
LOAD_WRITE ?= --write docs/reliability.md
load: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python tools/load_serve.py --clients 4 16 --seconds 60 $(LOAD_WRITE)

# The default policy from scratch (fixed seeds, 2 CPU cores, about 2 hours; resumable), shipped into
# policies/sketchmind-tiny/draw, then its results written into the docs (results, perception) and the model card.
# The latent variant beside it comes from v1's recipe: `make policy-v1` retrains it (draw/ is then v1's too).
TINY := policies/sketchmind-tiny
policy: $(STAMP)
	OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 $(BIN)/sketchmind train $(TINY).yaml
	$(BIN)/python -m sketchmind.train.ship $(TINY).yaml $(TINY)
	$(MAKE) results

policy-v1: $(STAMP)
	OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 $(BIN)/sketchmind train $(TINY)-v1.yaml
	$(BIN)/python -m sketchmind.train.ship $(TINY)-v1.yaml $(TINY)

results: $(STAMP)
	$(BIN)/python -m sketchmind.train.results $(TINY).yaml --write docs/results.md docs/perception.md $(TINY)/README.md

demo: $(STAMP)
	$(BIN)/sketchmind demo

golden: $(STAMP)
	$(BIN)/python tests/golden/regenerate.py

clean:
	rm -rf $(VENV) runs site .pytest_cache .mypy_cache .ruff_cache
