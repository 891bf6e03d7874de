# Every target sets up .venv on first use: torch (the pinned CUDA build pip finds on this disk) first,
# then the package with its dev extras. Delete .venv to start over.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test lint docs bench clean slurm

## slurm: the SLURM and munge binaries the SLURM tests start a local cluster with (Debian's slurm-wlm and
## munge; installed with apt-get when missing and this is root, as on CI; otherwise those tests skip)
slurm:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; \
	else echo "make: SLURM is not installed and this is not root: the SLURM tests will skip"; fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: supervised and DBiSL on the built-in shifted 2D phantom, 3 seeds, paired (about 90 s on 2 cores;
## DEMO_ARGS=--quick for a 20-step one-seed smoke test)
demo: $(STAMP)
	$(BIN)/python examples/demo.py --out runs/demo $(DEMO_ARGS)

## test: ruff, the layer contract, pytest, the strict docs build
test: lint slurm $(STAMP)
	$(BIN)/pytest
	$(BIN)/mkdocs build --strict --site-dir build/site

lint: $(STAMP)
	$(BIN)/ruff check mtssl tests benchmarks docs examples
	$(BIN)/ruff format --check mtssl tests benchmarks docs examples
	$(BIN)/lint-imports

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir build/site

## bench: the speed benchmarks that run on this machine
bench: $(STAMP)
	$(BIN)/python benchmarks/targets.py

clean:
	rm -rf build site .pytest_cache
