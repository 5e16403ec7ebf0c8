# syntax=docker/dockerfile:1
# The ledger as an image; `ledger` is its entrypoint (docker/compose.yml runs `topics create`,
# `serve` and `project` with it):
#   docker build -t points-ledger .
#   docker run --rm points-ledger --help
# The wheel is built and installed with the same two commands as a plain install (README,
# "Containers"); tests/unit/test_containers.py holds the two to each other.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the package and its dependencies as wheels; the C event reader compiled here ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir wheels .
# setup.py marks the extension optional (an install without a compiler still works): in the
# image its absence is a failed build, not a replay five times slower.
RUN python -c "import glob, sys, zipfile; \
names = zipfile.ZipFile(glob.glob('wheels/points_ledger-*.whl')[0]).namelist(); \
sys.exit(0 if any(n.startswith('ledger/wire/_eventreader') and n.endswith('.so') for n in names) \
else 'the wheel lacks the compiled event reader (ledger/wire/_eventreader.c)')"

# --- runtime: the wheel with no extras, no compiler, a user without privileges ---------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 ledger \
    && useradd --system --uid 10001 --gid ledger --home-dir /var/lib/ledger \
       --shell /usr/sbin/nologin ledger \
    && mkdir -p /var/lib/ledger/state \
    && chown -R ledger:ledger /var/lib/ledger
WORKDIR /tmp
RUN --mount=type=bind,from=build,source=/src/wheels,target=/tmp/wheels \
    pip install --no-cache-dir --no-index --find-links wheels points-ledger
# Smoke test: the C reader, the schema catalogue and the CLI load from the installed wheel.
RUN python -c "import ledger.wire._eventreader, ledger.wire; ledger.wire.Codec()" \
    && ledger --help > /dev/null

# LEDGER_HOME holds what the CLI keeps by default; LEDGER_STATE_DIR the processor's state
# (`ledger serve`), a volume: the state outlives the container (docs/operations.md).
ENV LEDGER_HOME=/var/lib/ledger LEDGER_STATE_DIR=/var/lib/ledger/state
VOLUME ["/var/lib/ledger/state"]
WORKDIR /var/lib/ledger
USER 10001:10001
# The metrics and health server, when a command is given --metrics-port 9464
# --metrics-host 0.0.0.0 (it binds 127.0.0.1 by default).
EXPOSE 9464
ENTRYPOINT ["ledger"]
CMD ["--help"]
