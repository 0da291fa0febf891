#!/usr/bin/env bash
# The C sources are laid out as the checked-in .clang-format says: every
# tracked .c/.h under src/, include/, tests/ and bench/ is unchanged by
# clang-format 14 (installed by scripts/install-deps.sh). Prints the files
# that are not, with the first lines clang-format would change.
set -euo pipefail
: "${INFERD_SRC:?INFERD_SRC must name the source tree}"
cd "$INFERD_SRC"
fmt=$(command -v clang-format-14 || command -v clang-format || true)
[[ -n "$fmt" ]] || { echo "FAIL: clang-format is not installed: run scripts/install-deps.sh" >&2; exit 1; }
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files 'src/*.[ch]' 'include/*.h' 'tests/*.c' 'bench/*.[ch]')
else
    mapfile -t files < <(find src include tests bench -name '*.[ch]' -not -path '*/node_modules/*')
fi
[[ ${#files[@]} -gt 50 ]] || { echo "FAIL: only ${#files[@]} C files found" >&2; exit 1; }
bad=()
for f in "${files[@]}"; do
    [[ -f "$f" ]] || continue
    if ! "$fmt" --dry-run --Werror "$f" >/dev/null 2>&1; then
        bad+=("$f")
    fi
done
if [[ ${#bad[@]} -gt 0 ]]; then
    for f in "${bad[@]}"; do
        echo "not formatted: $f" >&2
        "$fmt" "$f" | diff "$f" - | head -8 >&2 || true
    done
    echo "FAIL: ${#bad[@]} file(s) differ from .clang-format: run clang-format -i on them" >&2
    exit 1
fi
echo "ok: ${#files[@]} files formatted"
