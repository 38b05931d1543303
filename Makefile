# Two commands do all the set-up on a fresh machine:
#   make demo   creates/reuses .venv, installs icreward, runs the main job on the bundled offline data: the ICReward
#               paper's pipeline (reward models, best-of-N, ICReward-vs-MLP pairs, DPO, one report)
#   make test   creates/reuses .venv, installs icreward with its dev extras, runs the test suite
# Everything runs offline (HF_HUB_OFFLINE=1); no weights or data are downloaded.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint docs clean

# The install runs again only when the *content* of pyproject.toml or constraints.txt changed (a checkout or an
# editor that only touches them does not reinstall): the stamp's name carries a hash of both files.
INSTALL_HASH := $(shell $(PYTHON) -c "import hashlib; print(hashlib.sha256(open('pyproject.toml', 'rb').read() + open('constraints.txt', 'rb').read()).hexdigest()[:16])")
STAMP := $(VENV)/.installed-$(INSTALL_HASH)

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -c constraints.txt -e ".[all,dev,docs]"
	rm -f $(VENV)/.installed-*
	touch $@ $(VENV)/.installed

install: $(STAMP)

demo: install
	$(PY) -m icreward.cli pipeline --output_dir outputs/demo

test: install
	$(PY) -m pytest tests -q

lint: install
	$(VENV)/bin/ruff check icreward tests examples benchmarks
	$(VENV)/bin/ruff format --check icreward tests examples benchmarks

docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir outputs/site

clean:
	rm -rf outputs .pytest_cache
