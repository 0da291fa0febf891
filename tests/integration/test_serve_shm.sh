#!/usr/bin/env bash
# The system shared-memory extension of `inferd serve` (KServe v2 / Triton),
# with real shared-memory objects made by a Python client
# (multiprocessing.shared_memory, i.e. shm_open): GET /v2 advertises it;
# register, status and unregister as Triton's clients use them; our create
# (a region the worker makes: its key opens in the client, mode 0600, the
# same memory on both sides); every malformed or refused call with its
# status and message, each followed by a good request; per-session quotas
# (the Inference-Session header on the Unix socket), the global cap, TTL
# cleanup (inferd_shm_expired_total), created objects unlinked when they
# go; where it is served (--shm off; a non-loopback --host serves it on the
# Unix socket only).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

sock="$tmp/inferd.sock"
tag="shmtest-$$"
py=/usr/bin/python3
# A client object: mk NAME SIZE (filled with byte 0x5a), rm_obj NAME.
# (Python 3.11's resource tracker would unlink every object a process made
# or opened when it exits: each is taken off its list.)
mk() {
    $py - "$1" "$2" <<'PY'
import sys
from multiprocessing import resource_tracker, shared_memory as s
m = s.SharedMemory(name=sys.argv[1], create=True, size=int(sys.argv[2]))
resource_tracker.unregister(m._name, "shared_memory")
m.buf[:] = b"\x5a" * len(m.buf)
m.close()
PY
}
rm_obj() { rm -f "/dev/shm/$1"; }
trap 'rm -f /dev/shm/$tag-*; cleanup' EXIT

# kserve_err STATUS MESSAGE: $tmp/out is {"error": "...MESSAGE..."}.
kserve_err() {
    jq -e --arg m "$2" 'keys == ["error"] and (.error | contains($m))' "$tmp/out" >/dev/null ||
        fail "expected a KServe error saying '$2' ($1): $(cat "$tmp/out")"
}
# bad STATUS MESSAGE METHOD PATH [BODY] [CURL ARGS]: the error, then a good request.
bad() {
    local st=$1 msg=$2
    shift 2
    expect_http "$st" "$@"
    kserve_err "$st" "$msg"
    still_serves
}
# refused STATUS MESSAGE REASON PATH BODY: a create the worker cannot serve
# now: the error, why (quota, full, unavailable), and where the tensors go
# instead (the body, as binary data); then a good request.
refused() {
    expect_http "$1" POST "$4" "$5"
    jq -e --arg m "$2" --arg r "$3" 'keys == ["error", "fallback", "reason"] and
        (.error | contains($m)) and .reason == $r and .fallback == "binary_data"' "$tmp/out" \
        >/dev/null || fail "expected a refused create saying '$2' ($1, $3): $(cat "$tmp/out")"
    still_serves
}
reg() { # reg NAME KEY OFFSET SIZE
    printf '{"key":"%s","offset":%s,"byte_size":%s}' "$2" "$3" "$4"
}
shm_url=/v2/systemsharedmemory

serve_start -m "$model" -t 1 -np 2 --unix "$sock" --shm-session-regions 2 --shm-session-mb 4 \
    --shm-max-mb 6 --shm-max-regions 6
serve_wait_ready

# ---- advertised, and empty at start ----------------------------------------------
expect_http 200 GET /v2
check '.extensions | index("system_shared_memory") != null'
check '.shared_memory.shm == true and .shared_memory.shm_total_bytes > 0'
expect_http 200 GET $shm_url/status
check '. == []'

# ---- register / status / unregister (as Triton's clients) ---------------------
mk "$tag-a" 65536
expect_http 200 POST $shm_url/region/in/register "$(reg in "/$tag-a" 0 65536)"
check '. == {}'
expect_http 200 POST $shm_url/region/in2/register "$(reg in2 "/$tag-a" 1000 4096)"
expect_http 200 GET $shm_url/status
check 'map(.name) == ["in", "in2"]'
check '.[1] | .key == "/'"$tag"'-a" and .offset == 1000 and .byte_size == 4096 and .created == false'
expect_http 200 GET $shm_url/region/in2/status
check 'length == 1 and .[0].name == "in2" and .[0].views == 0'

# Malformed and refused registrations.
bad 409 "region 'in' is already registered" POST $shm_url/region/in/register "$(reg in "/$tag-a" 0 16)"
bad 404 "no shared-memory object '/$tag-none'" POST $shm_url/region/x/register "$(reg x "/$tag-none" 0 16)"
bad 400 "is beyond the 65536 bytes of" POST $shm_url/region/x/register "$(reg x "/$tag-a" 65000 1000)"
bad 400 "is beyond the 65536 bytes of" POST $shm_url/region/x/register "$(reg x "/$tag-a" 70000 1)"
bad 400 "byte_size is 0" POST $shm_url/region/x/register "$(reg x "/$tag-a" 0 0)"
bad 400 "byte_size is required" POST $shm_url/region/x/register "{\"key\":\"/$tag-a\"}"
bad 400 "key is required" POST $shm_url/region/x/register '{"byte_size":16}'
bad 400 "key: expected a string" POST $shm_url/region/x/register '{"key":5,"byte_size":16}'
bad 400 "offset: expected an integer" POST $shm_url/region/x/register \
    "{\"key\":\"/$tag-a\",\"offset\":\"0\",\"byte_size\":16}"
bad 400 "byte_size: -5 is negative" POST $shm_url/region/x/register \
    "{\"key\":\"/$tag-a\",\"byte_size\":-5}"
bad 400 "a shared-memory key is '/' and a name" POST $shm_url/region/x/register \
    "{\"key\":\"$tag-a\",\"byte_size\":16}"
bad 400 "a shared-memory key is '/' and a name" POST $shm_url/region/x/register \
    '{"key":"/a/b","byte_size":16}'
bad 400 "invalid JSON" POST $shm_url/region/x/register '{"key":'
bad 404 "no region 'nope'" GET $shm_url/region/nope/status
bad 405 "GET is not allowed here" GET $shm_url/region/in/register
# A region name with a control character (percent-encoded in the path).
bad 400 "a region name has no '/' or control characters" POST $shm_url/region/a%01b/register \
    "$(reg x "/$tag-a" 0 16)"

# Unregister one, all; an unknown one is not an error (as Triton).
expect_http 200 POST $shm_url/region/in2/unregister
expect_http 200 POST $shm_url/region/never-was/unregister
expect_http 200 GET $shm_url/status
check 'map(.name) == ["in"]'
expect_http 200 POST $shm_url/unregister
expect_http 200 GET $shm_url/status
check '. == []'
[[ -e "/dev/shm/$tag-a" ]] || fail "unregister removed the client's own object"

# ---- create: a region the worker makes -------------------------------------------
expect_http 200 POST $shm_url/region/out/create '{"byte_size":1048576}'
check '.name == "out" and .offset == 0 and .byte_size == 1048576 and (.key | startswith("/inferd-"))'
key=$(jq -r .key "$tmp/out")
[[ "$(stat -c %a "/dev/shm/${key#/}")" == 600 ]] || fail "created object mode $(stat -c %a "/dev/shm/${key#/}")"
$py - "${key#/}" <<'PY'
import sys
from multiprocessing import resource_tracker, shared_memory as s
m = s.SharedMemory(name=sys.argv[1])
resource_tracker.unregister(m._name, "shared_memory")
assert m.size >= 1048576, m.size
assert bytes(m.buf[:16]) == bytes(16), "a created region starts zeroed"
m.close()
PY
expect_http 200 GET $shm_url/region/out/status
check '.[0].created == true and .[0].key == "'"$key"'"'
bad 409 "region 'out' is already registered" POST $shm_url/region/out/create '{"byte_size":16}'
bad 400 "byte_size is required" POST $shm_url/region/x/create '{}'
bad 400 "byte_size is 0" POST $shm_url/region/x/create '{"byte_size":0}'
# The session (no key, TCP: the one anonymous session) may create 2 regions
# and 4 MiB.
refused 507 "the session's quota: 2 regions and 4194304 bytes at most; it has 1 and 1048576" \
    quota $shm_url/region/big/create '{"byte_size":4194304}'
expect_http 200 POST $shm_url/region/out2/create '{"byte_size":1048576}'
refused 507 "the session's quota: 2 regions" quota $shm_url/region/out3/create '{"byte_size":16}'
# Another session (the Unix socket's Inference-Session header) has its own
# quota, but all share the worker's 6 MiB.
ucurl() { curl -s --unix-socket "$sock" -o "$tmp/out" -w '%{http_code}' "$@"; }
[[ $(ucurl -H 'Inference-Session: s2' -d '{"byte_size":3145728}' http://l$shm_url/region/s2a/create) == 200 ]] ||
    fail "session s2's create: $(cat "$tmp/out")"
[[ $(ucurl -H 'Inference-Session: s3' -d '{"byte_size":2097152}' http://l$shm_url/region/s3a/create) == 507 ]] ||
    fail "the global cap: $(cat "$tmp/out")"
jq -e '.error | contains("the worker'"'"'s shared memory is full: 5242880 of 6291456 bytes in use")' \
    "$tmp/out" >/dev/null && jq -e '.reason == "quota" and .fallback == "binary_data"' "$tmp/out" \
    >/dev/null || fail "the global cap's refusal: $(cat "$tmp/out")"
still_serves
expect_http 200 GET /metrics
grep -q '^inferd_shm_regions 3$' "$tmp/out" && grep -q '^inferd_shm_created_bytes 5242880$' "$tmp/out" &&
    grep -q '^inferd_shm_create_refused_total{reason="quota"} 3$' "$tmp/out" ||
    fail "shm metrics: $(grep '^inferd_shm' "$tmp/out")"
expect_http 200 GET /v1/status
check '.shm.enabled == true and .shm.regions == 3 and .shm.created_bytes == 5242880'
# max-regions (6): three more registrations fill it.
for r in r1 r2 r3; do
    expect_http 200 POST $shm_url/region/$r/register "$(reg $r "/$tag-a" 0 16)"
done
bad 507 "6 regions are registered, the most allowed" POST $shm_url/region/r4/register \
    "$(reg r4 "/$tag-a" 0 16)"
# Unregistering a created region unlinks its object.
expect_http 200 POST $shm_url/region/out/unregister
[[ ! -e "/dev/shm/${key#/}" ]] || fail "the created object $key is still there after unregister"
expect_http 200 POST $shm_url/unregister
[[ -z "$(ls /dev/shm | grep '^inferd-' || true)" ]] || fail "created objects left: $(ls /dev/shm)"
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"

# ---- TTL: regions no request uses go, created objects with them --------------------
serve_start -m "$model" -t 1 -np 2 --shm-ttl 1
serve_wait_ready
expect_http 200 POST $shm_url/region/t1/register "$(reg t1 "/$tag-a" 0 16)"
expect_http 200 POST $shm_url/region/t2/create '{"byte_size":4096}'
key=$(jq -r .key "$tmp/out")
for _ in $(seq 1 50); do
    expect_http 200 GET $shm_url/status
    jq -e '. == []' "$tmp/out" >/dev/null && break
    sleep 0.1
done
check '. == []'
[[ ! -e "/dev/shm/${key#/}" ]] || fail "an expired created region's object is still there"
expect_http 200 GET /metrics
grep -q '^inferd_shm_expired_total 2$' "$tmp/out" || fail "expired: $(grep '^inferd_shm' "$tmp/out")"
serve_stop

# ---- /dev/shm full or unavailable (a mount namespace of our own, as root) -----------
# The worker refuses the create with the reason, counts it, and still
# serves; the client sends its tensors in the body instead.
if [[ $(id -u) == 0 ]] && unshare --mount --propagation private true 2>/dev/null; then
    real_inferd=$INFERD
    # inferd serve with /dev/shm replaced by a tmpfs mounted with $SHM_MOUNT.
    printf '#!/bin/sh\nexec unshare --mount --propagation private sh -c %s "%s" "$@"\n' \
        "'mount -t tmpfs -o \"\$SHM_MOUNT\" tmpfs /dev/shm && exec \"\$0\" \"\$@\"'" \
        "$real_inferd" >"$tmp/in-ns.sh"
    chmod +x "$tmp/in-ns.sh"
    # The client's way when a create is refused: its tensor in the body.
    fallback() {
        printf '{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}}],"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}}]}' >"$tmp/fb"
        local n=$(stat -c %s "$tmp/fb")
        printf '\x07\x00\x00\x00\x09\x00\x00\x00' >>"$tmp/fb"
        expect_http 200 POST /v2/models/ident/infer "" --data-binary @"$tmp/fb" \
            -H "Inference-Header-Content-Length: $n" -H 'Content-Type: application/octet-stream'
        [[ $(tail -c 8 "$tmp/out" | od -An -tx1 | tr -d ' \n') == 0700000009000000 ]] ||
            fail "the fallback's binary output: $(od -c "$tmp/out" | tail -3)"
    }
    INFERD=$tmp/in-ns.sh SHM_MOUNT=size=256k serve_start -m "$model" -m identity:ident -t 1 -np 2
    serve_wait_ready
    refused 500 "shared memory is full: 1048576 bytes" full $shm_url/region/big/create '{"byte_size":1048576}'
    fallback
    expect_http 200 POST $shm_url/region/small/create '{"byte_size":65536}'
    expect_http 200 GET /v2
    check '.shared_memory.shm_total_bytes == 262144 and .shared_memory.shm_free_bytes < 262144'
    expect_http 200 GET /metrics
    grep -q '^inferd_shm_create_refused_total{reason="full"} 1$' "$tmp/out" ||
        fail "full: $(grep '^inferd_shm_create' "$tmp/out")"
    serve_stop
    [[ "$serve_rc" == 0 ]] || fail "serve (256k /dev/shm) exited $serve_rc"
    INFERD=$tmp/in-ns.sh SHM_MOUNT=ro serve_start -m "$model" -m identity:ident -t 1 -np 2
    serve_wait_ready
    refused 500 "shared memory is unavailable (shm_open" unavailable $shm_url/region/x/create \
        '{"byte_size":4096}'
    fallback
    expect_http 200 GET /v2
    check '.shared_memory.shm == false'
    expect_http 200 GET /v1/status
    check '.shm.create_refused == {"quota": 0, "full": 0, "unavailable": 1}'
    serve_stop
    [[ "$serve_rc" == 0 ]] || fail "serve (read-only /dev/shm) exited $serve_rc"
    INFERD=$real_inferd
else
    echo "SKIP: /dev/shm full or unavailable (needs root and unshare --mount)"
fi

# ---- where it is served --------------------------------------------------------------
serve_start -m "$model" -t 1 -np 2 --shm off
serve_wait_ready
bad 501 "system shared memory is off on this server (--shm off)" GET $shm_url/status
expect_http 200 GET /v2
check '.extensions | index("system_shared_memory") == null'
expect_http 200 GET /v1/status
check '.shm.enabled == false'
serve_stop
# A host every machine can reach: on the Unix socket only (unless --shm on).
serve_start -m "$model" -t 1 -np 2 --host 0.0.0.0 --unix "$sock"
serve_wait_ready
bad 501 "served on the Unix socket and on loopback addresses only" GET $shm_url/status
[[ $(ucurl http://l$shm_url/status) == 200 ]] || fail "status on the Unix socket: $(cat "$tmp/out")"
serve_stop
serve_start -m "$model" -t 1 -np 2 --host 0.0.0.0 --shm on
serve_wait_ready
expect_http 200 GET $shm_url/status
serve_stop
expect_error 2 "--shm: 'maybe' is not on or off" serve -m "$model" --shm maybe
echo PASS
