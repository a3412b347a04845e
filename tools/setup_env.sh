#!/usr/bin/env bash
# Creates .venv and installs everything the tests need, on a fresh machine:
# the Python dependencies (with the dev extras), Debian's kcat and docker-compose (the
# compose-file tests run `docker-compose config`), and kafkajs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
if ! command -v kcat >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null
    else
        echo "setup_env: kcat is missing and cannot be installed here" >&2
    fi
fi
if ! command -v docker-compose >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
    else
        echo "setup_env: docker-compose is missing and cannot be installed here" >&2
    fi
fi
if command -v npm >/dev/null 2>&1 && [ ! -d tests/js/node_modules/kafkajs ]; then
    (cd tests/js && npm install --silent --no-audit --no-fund >/dev/null)
fi
