# litlab — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-all bench lint format tensorboard kl-curve ln-report clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_PINS)
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install torch + the project (editable, with dev tools)

train: install ## Train the default study (VAE-MLP on MNIST); extra overrides: make train ARGS="..."
	$(BIN)/python train.py $(ARGS)

test: install ## Run the offline test suite (DATA_DIR must point at the data sets)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-all: install ## Run every test, the slow end-to-end ones included
	$(BIN)/python -m pytest $(ARGS)

bench: install ## Speed: litlab vs a plain PyTorch loop, start-up -> benchmarks/RESULTS.md (ARGS="--quick", "--threads 1", ...)
	DATA_DIR="$${DATA_DIR:-$(abspath ..)/shared/data}" $(BIN)/python -m benchmarks.run $(ARGS)

lint: install ## ruff: lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## ruff: apply fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

tensorboard: install ## Open TensorBoard on every run and sweep under logs/
	$(BIN)/tensorboard --logdir logs/

kl-curve: install ## Report Q3: plot x -> -log x + (x^2 - 1)/2 into results/
	$(BIN)/python -m litlab.analysis.kl_curve --out results/figures/kl_curve.png

ln-report: install ## LN-placement figures + CSV from a sweep folder: make ln-report SWEEP=logs/ln_placement/multiruns/<date>
	$(BIN)/python -m litlab.analysis.ln_sweep $(SWEEP) $(ARGS)

clean: ## Remove caches and build files (keeps .venv, logs/ and data/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -exec rm -rf {} +
