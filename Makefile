# detailface — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
N ?= 1000
OUT ?= shards
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
SEED ?= 0
SIZE ?= 224
LIGHTS ?= sh9
IMAGE ?= lossless
export PYOPENGL_PLATFORM ?= osmesa

.DEFAULT_GOAL := help
.PHONY: help install test dataset preview train benchmark demo clean

help: ## list the targets with one line each
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

# one install stamp per Python environment: after switching to another venv `make` installs again
ENV_ID := $(shell $(PYTHON) -c 'import hashlib, sys; print(hashlib.sha1(sys.prefix.encode()).hexdigest()[:12])')
STAMP := .make/installed-$(ENV_ID)

install: $(STAMP) ## install system + Python dependencies (idempotent; a second run takes seconds)

$(STAMP): pyproject.toml Makefile
	@if ! ldconfig -p | grep -q libOSMesa; then \
	  echo "installing libosmesa6 (headless OpenGL for pyrender)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libosmesa6; fi
	$(PYTHON) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@# pyrender pins PyOpenGL==3.1.0, which cannot use OSMesa: upgrade it as a second step.
	$(PYTHON) -m pip install -q --disable-pip-version-check 'PyOpenGL>=3.1.4'
	@mkdir -p .make && touch $@

test: install ## run the test suite (what CI runs)
	$(PYTHON) -m pytest -q tests

dataset: install ## render N synthetic samples into OUT/ (N=1000 OUT=shards WORKERS=<cores> SEED=0 SIZE=224 LIGHTS=sh9 IMAGE=lossless|jpeg)
	synth-cli render --out $(OUT) --n $(N) --workers $(WORKERS) --seed $(SEED) --size $(SIZE) --lights $(LIGHTS) --image-codec $(IMAGE)

preview: install ## re-render docs/builtin_preview.png (mean head, skin range, identity and expression samples of the built-in model)
	$(PYTHON) scripts/make_model_preview.py

DATA ?= shards
RUN ?= runs/coarse
train: install ## train CoarseNet on DATA/ into RUN/ (DATA=shards RUN=runs/coarse SIZE=224)
	train-cli coarse --data $(DATA) --out $(RUN) --size $(SIZE)

demo: install ## the whole pipeline at small scale (~30 min on 2 cores): demo/index.html, demo/report.json
	$(PYTHON) scripts/demo.py

# the speed benchmarks (ratios side by side, run with their defaults); the other scripts in
# benchmarks/ measure accuracy or statistics, some of them on renders, photos or a checkpoint you
# give them (docs/benchmarks.md)
SPEED_BENCHMARKS = synth_throughput kernels rasterizer train_step loader reconstruct

benchmark: install ## print the speed benchmarks (ratios measured side by side)
	@for b in $(SPEED_BENCHMARKS); do echo "== benchmarks/$$b.py"; $(PYTHON) benchmarks/$$b.py || exit 1; done

clean: ## remove the install stamp and caches (not the datasets)
	rm -rf .make .pytest_cache build *.egg-info
