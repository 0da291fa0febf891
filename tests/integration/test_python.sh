#!/usr/bin/env bash
# The inferd Python package (python/): `pip install` it offline into a
# scratch directory (Debian's setuptools, no build isolation), linking this
# build's libraries, and run its pytest suite (python/tests) with Debian's
# interpreter, which sees python3-numpy and python3-torch.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

py=/usr/bin/python3
build=$(dirname "$INFERD")
site="$tmp/site"
INFERD_CMAKE_BUILD=$build "$py" -m pip install -q --no-build-isolation --no-deps \
    --no-cache-dir --target "$site" "$INFERD_SRC/python" >"$tmp/pip.log" 2>&1 ||
    fail "pip install ./python: $(tail -20 "$tmp/pip.log")"
env=(PYTHONPATH="$site" PYTHONDONTWRITEBYTECODE=1)
if [[ "${INFERD_SANITIZE:-}" == *address* ]]; then
    # The libraries are instrumented: the interpreter needs the runtimes
    # first. Python's own allocations are not ours to report.
    env+=(LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
        ASAN_OPTIONS=detect_leaks=0)
elif [[ -n "${INFERD_SANITIZE:-}" ]]; then
    echo "SKIP: the Python package under -fsanitize=$INFERD_SANITIZE"
    exit 0
fi
cd "$tmp"
env "${env[@]}" "$py" -m pytest -q -p no:cacheprovider "$INFERD_SRC/python/tests" ||
    fail "pytest python/tests"
echo PASS
