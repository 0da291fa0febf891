#!/usr/bin/env bash
# The newcomer's install of the Python package, as docs/python.md gives it:
# a venv that sees Debian's packages, then `pip install ./python` with
# nothing else (no network: pip uses Debian's setuptools, and setup.py
# builds the C libraries with the project's CMake itself). The package
# then generates what `inferd generate` gives for the same seed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if [[ -n "${INFERD_SANITIZE:-}" ]]; then
    echo "SKIP: setup.py's own CMake build is a plain one (test_python covers the package)"
    exit 0
fi
# A copy of the source tree as git sees it (tracked and untracked files,
# not the ignored builds): setup.py builds inside it.
src="$tmp/src"
mkdir -p "$src"
git -C "$INFERD_SRC" ls-files -z --cached --others --exclude-standard >"$tmp/files" ||
    fail "the source tree is not a git checkout"
(cd "$INFERD_SRC" && xargs -0 -r cp --parents -t "$src" <"$tmp/files")
[[ -f "$src/python/setup.py" ]] || fail "could not copy the source tree"
/usr/bin/python3 -m venv --system-site-packages "$tmp/venv"
"$tmp/venv/bin/pip" install --no-cache-dir --no-index "$src/python" >"$tmp/pip.log" 2>&1 ||
    fail "pip install ./python: $(tail -20 "$tmp/pip.log")"
grep -q "Successfully installed inferd" "$tmp/pip.log" || fail "pip: $(tail -5 "$tmp/pip.log")"

want=$("$INFERD" generate -m "$model" -p "Once upon a time" -n 16 --seed 42 --json -t 1 |
    jq -r .text)
cd "$tmp"
got=$("$tmp/venv/bin/python" - "$model" <<'PY'
import sys
import inferd
with inferd.get_or_load(sys.argv[1], threads=1) as m:
    print(m.complete("Once upon a time", max_tokens=16, seed=42)["text"])
PY
)
[[ "$got" == "$want" ]] || fail "the installed package gave '$got', inferd generate '$want'"
echo PASS
