# syntax=docker/dockerfile:1
#
# The image every tune2serve pipeline step runs in: the KFP components name it as their
# base_image and import the installed package. One image for all five steps; only
# export (the LoRA merge) needs torch, and it gets the CPU build.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/tune2serve:TAG .
#   tune2serve compile --image REGION-docker.pkg.dev/PROJECT/REPO/tune2serve:TAG
#
# (docs/OPERATIONS.md: building with Cloud Build, pushing to Artifact Registry.)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

# torch is locked as 2.13.0+cpu, a build only PyTorch's CPU index serves (PyPI's torch
# wheel pulls several GB of CUDA libraries that no step uses); the lock's hash is that
# wheel's, so any other file fails the install.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Build tools only here: the package's own C kernel (the export's LoRA merge,
# components/export/merge/lora_rows.c) is compiled by the install below, and a dependency
# might ship no wheel for this platform. Not version-pinned: bookworm's point releases
# replace them, and none reaches the final stage (the venv is copied, compiled).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Exactly the runtime lock, every file checked against its sha256: the kfp whose
# executor runs each step (the compiled steps install nothing), the SDKs, torch.
WORKDIR /src
COPY requirements.txt ./requirements.txt
RUN pip install --require-hashes --no-deps --extra-index-url "${TORCH_INDEX_URL}" -r requirements.txt

COPY pyproject.toml setup.py README.md ./
# What the steps run: the components, the DAG and its runners, the CLI. Not the local stack
# or the demo models (localstack/, demo/): setup.py skips a package root that is absent.
COPY components ./components
COPY pipelines ./pipelines
COPY cli ./cli

# The package itself, adding nothing: its dependencies and build backend are in the lock.
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && tune2serve --version

# ---------------------------------------------------------------- final stage
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="tune2serve" \
      org.opencontainers.image.description="Promote a fine-tuned LLM checkpoint to a Vertex AI endpoint (KFP components)" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 tune2serve \
    && useradd --system --uid 10001 --gid tune2serve --create-home --home-dir /home/tune2serve tune2serve

COPY --from=build /opt/venv /opt/venv

# No model hub at run time: models come from GCS; never remote code.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/home/tune2serve/.cache/huggingface \
    TUNE2SERVE_LOG_FORMAT=json

WORKDIR /home/tune2serve
USER 10001:10001

# KFP replaces the command of every step; this is what a bare `docker run` shows.
CMD ["tune2serve", "--help"]
