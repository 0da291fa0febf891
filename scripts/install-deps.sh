#!/usr/bin/env bash
# Install everything the build, the tests and `make run` need on Debian 12.
# Idempotent and non-interactive: packages already present are skipped, and
# the npm test client is installed only when missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."

# libcurl: the readiness callback; libnats: the NATS worker, and
# nats-server for its tests (the HTTP server is our own: src/server/httpd.c).
# prometheus: promtool, which checks /metrics in the tests (on a systemd host the package also installs a
# Prometheus service). curl and jq drive the integration tests. libpcre2: the
# byte-level BPE pre-tokenizer split patterns (UTF + Unicode properties).
# python3-matplotlib: the soak benchmark's plot (bench/soak.sh). libdlpack-dev:
# the DLPack 0.6 header, for tensors shared with NumPy and PyTorch. python3-numpy:
# the tensor tests' Python client (tests/integration/test_serve_tensors.sh).
# python3-dev, -setuptools, -pip, -venv: the inferd Python package (python/,
# built offline by pip with Debian's setuptools, in a venv); python3-torch,
# python3-pytest, python3-pytest-asyncio: its tests. libgrpc++-dev,
# protobuf-compiler-grpc (and protobuf-compiler's protoc): the gRPC door
# (src/grpc) and the Python code its tests generate; python3-grpcio and
# python3-protobuf: the Python client in those tests.
pkgs=(build-essential cmake pkg-config git clang clang-format libclang-rt-14-dev
      libjansson-dev libcmocka-dev libcurl4-openssl-dev libnats-dev libdlpack-dev
      libpcre2-dev
      nats-server python3 python3-matplotlib python3-numpy jq curl prometheus
      python3-dev python3-setuptools python3-pip python3-venv python3-torch python3-pytest
      python3-pytest-asyncio libgrpc++-dev protobuf-compiler protobuf-compiler-grpc
      python3-grpcio python3-protobuf)
# Node.js and npm run the official `openai` client in the tests; a Node.js
# installed another way (with its own npm) is used as it is.
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$p")
done

SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The npm test client, pinned by tests/node/package-lock.json.
stamp=tests/node/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ tests/node/package-lock.json -nt "$stamp" ]; then
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi
