#!/usr/bin/env bash
# Install everything the build, the tests and `make run` need on Debian 12.
# Idempotent and non-interactive: packages already present are skipped.
set -euo pipefail

pkgs=(build-essential cmake pkg-config git clang libclang-rt-14-dev
      libjansson-dev libcmocka-dev python3 jq)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
