# The README's two commands: `make run` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TYPED_CORE := sketchmind

.PHONY: run test lint typecheck unit bench golden clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Torch comes first and by exact version, so pip takes the builds on local disk.
$(STAMP): $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev,train]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sketchmind solve data/vsp-maze-examples/maps/level4/img/0.png "Find a safe path for the player to the goal." \
		--model expert --save runs/demo
	$(BIN)/sketchmind show runs/demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy $(TYPED_CORE)

unit: $(STAMP)
	$(BIN)/pytest -n 2

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python tools/bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python tools/bench_hf.py
	HF_HUB_OFFLINE=1 $(BIN)/python tools/bench_agent.py
	HF_HUB_OFFLINE=1 $(BIN)/python tools/bench_latent.py

golden: $(STAMP)
	$(BIN)/python tests/golden/regenerate.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
