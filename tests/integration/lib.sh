# Shared by the integration scripts: sourced after `set -euo pipefail`.
# Checks $INFERD and $INFERD_FIXTURES, makes $tmp (removed on exit unless
# INFERD_TEST_KEEP=1), and defines fail, run, expect_error and check.

: "${INFERD:?INFERD must name the inferd binary}"
: "${INFERD_FIXTURES:?INFERD_FIXTURES must name tests/fixtures}"

model="$INFERD_FIXTURES/models/stories260K.gguf"
vocab="$INFERD_FIXTURES/vocab/ggml-vocab-llama-spm.gguf"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/inferd-$(basename "$0" .sh).XXXXXX")"
if [[ "${INFERD_TEST_KEEP:-0}" == 1 ]]; then
    trap 'echo "kept $tmp" >&2' EXIT
else
    trap 'rm -rf "$tmp"' EXIT
fi

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# Run inferd, capturing stdout, stderr and the exit status without set -e
# stopping the script; prints the status.
run() {
    local rc=0
    "$INFERD" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    echo "$rc"
}

# jq expression that must be true on $tmp/out.
check() {
    jq -e "$1" "$tmp/out" >/dev/null || fail "jq check failed: $1 (output: $(head -c 400 "$tmp/out"))"
}

# Run inferd and require exit STATUS and exactly one stderr line holding
# SUBSTRING.
expect_error() { # expect_error STATUS SUBSTRING ARGS...
    local want=$1 msg=$2
    shift 2
    local rc
    rc=$(run "$@")
    [[ "$rc" == "$want" ]] || fail "inferd $* exited $rc, expected $want: $(cat "$tmp/err")"
    [[ $(wc -l <"$tmp/err") -eq 1 ]] || fail "inferd $*: expected one error line, got: $(cat "$tmp/err")"
    grep -qF -- "$msg" "$tmp/err" || fail "inferd $*: error '$(cat "$tmp/err")' lacks '$msg'"
}
