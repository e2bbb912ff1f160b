#!/usr/bin/env bash
# Checks the control API against its OpenAPI document, docs/openapi.json (made from the code;
# `SWITCHBOARD_WRITE_OPENAPI=1 cargo test --lib api::openapi` refreshes it, and `cargo test`
# fails while it is stale):
#   1. the document is valid OpenAPI 3.1 (openapi-spec-validator);
#   2. schemathesis sends generated requests, valid and invalid, to every operation of a live
#      `switchboard serve` node that requires tokens: once with an admin token, once with none.
#      Every answer must be 2xx or 4xx (no 5xx), have a status, content type, headers and body
#      the document gives for that operation; with the token, an operation that needs one must
#      refuse the request without it (ignored_auth); without a token, every operation but the
#      public ones (health, metrics, the document, the WSDL) must answer 401 `unauthorized`.
#
#   bash scripts/openapi-check.sh [SWITCHBOARD_BINARY]
#
# The Python tools are installed from PyPI into a virtual environment kept at
# $OPENAPI_CHECK_VENV (default /tmp/switchboard-openapi-venv; made again when the pins below
# change). The node and schemathesis run in a network namespace of their own with only a
# loopback interface: the fuzzer registers random addresses, which the node's health checker
# then probes, and nothing the node resolves or connects to can leave the machine. So it runs as
# root.
#
# Environment: OPENAPI_CHECK_EXAMPLES (generated cases per operation and phase, default 25),
# OPENAPI_CHECK_BASE_PORT (default 17600; the node takes BASE to BASE+2).
set -euo pipefail
cd "$(dirname "$0")/.."

# One major version of each: their checks and CLI are what this script was written against.
pins=("openapi-spec-validator==0.9.*" "schemathesis==4.*")
examples=${OPENAPI_CHECK_EXAMPLES:-25}
base=${OPENAPI_CHECK_BASE_PORT:-17600}
# A run ends by itself well before this; the bound is for a run that hangs.
run_limit=60

if [[ "${1:-}" != --in-namespace ]]; then
    bin=${1:-}
    if [[ -z "$bin" ]]; then
        cargo build --locked --bin switchboard
        target_dir=$(cargo metadata --format-version 1 --no-deps |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
        bin="$target_dir/debug/switchboard"
    fi
    venv=${OPENAPI_CHECK_VENV:-/tmp/switchboard-openapi-venv}
    if [[ "$(cat "$venv/pins" 2>/dev/null)" != "${pins[*]}" ]]; then
        rm -rf "$venv"
        python3 -m venv "$venv" || {
            echo "error: python3 -m venv failed (apt-get install python3-venv)" >&2
            exit 1
        }
        "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
        echo "${pins[*]}" >"$venv/pins"
    fi
    "$venv/bin/openapi-spec-validator" docs/openapi.json
    echo "ok   docs/openapi.json is valid OpenAPI ($("$venv/bin/python" -c \
        'import json; print(json.load(open("docs/openapi.json"))["openapi"])'))"
    exec unshare --net -- bash "$0" --in-namespace "$bin" "$venv"
fi

# In the namespace: only loopback, brought up here.
bin=$2
venv=$3
ip link set lo up
dir=$(mktemp -d)
token=openapi-check-admin-0123456789
cat >"$dir/tokens.json" <<EOF
{"tokens": [{"name": "openapi-check-admin", "token": "$token", "scopes": ["admin", "read", "register:*", "bind:*"]}]}
EOF
api="http://127.0.0.1:$((base + 1))"
document=$PWD/docs/openapi.json
"$bin" serve --node-id 1 --data-dir "$dir/data" \
    --data-addr "127.0.0.1:$base" --api-addr "127.0.0.1:$((base + 1))" --peer-addr "127.0.0.1:$((base + 2))" \
    --peers "1=127.0.0.1:$((base + 2))" --cluster-secret openapi-check-secret-0123 \
    --tokens-file "$dir/tokens.json" --allow-networks 127.0.0.0/8 >"$dir/node.log" 2>&1 &
node=$!
cleanup() {
    kill "$node" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$node" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$node" 2>/dev/null || true
    [[ -n "${OPENAPI_CHECK_KEEP:-}" ]] || rm -rf "$dir"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    tail -n 30 "$dir/node.log" >&2
    exit 1
}

deadline=$((SECONDS + 60))
until curl -sf "$api/health/ready" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "the node is not ready within 60 s"
    sleep 0.2
done
curl -sf "$api/v1/openapi.json" | cmp -s - docs/openapi.json ||
    fail "GET /v1/openapi.json is not docs/openapi.json (build the binary from this tree)"

# A blocking read waits for a later index up to its `wait` (five minutes without one): the
# fuzzer's reads name index 0, which this node has applied past, so they answer at once and
# still go through the blocking path's checks of `wait`. The event stream never ends: each
# request reads it for a quarter of a second (or 20 events) and checks every event it read.
cat >"$dir/schemathesis.toml" <<'EOF'
[[operations]]
include-operation-id = "list_registrations"
parameters = { "query.index" = 0 }

[[operations]]
include-operation-id = "events"
request-timeout = 0.25
EOF

# run NAME ARGS...: one schemathesis run from the committed document against the node.
run() {
    local name=$1
    shift
    local began=$SECONDS code=0
    # From the run's directory, where schemathesis keeps its cache.
    (cd "$dir" && timeout --kill-after=5 "$run_limit" "$venv/bin/schemathesis" --config-file schemathesis.toml \
        run "$document" --url "$api" \
        --max-examples "$examples" --request-timeout 5 --seed 1 --no-color --output-truncate true \
        --warnings off --report har --report-har-path "$dir/$name.har" "$@" >"$dir/$name.out" 2>&1) || code=$?
    if ((code != 0)); then
        cat "$dir/$name.out" >&2
        ((code != 124)) || fail "schemathesis, $name: still running after ${run_limit} s"
        fail "schemathesis, $name: exit code $code"
    fi
    echo "ok   schemathesis, $name: $(grep -E '[0-9]+ (passed|generated)' "$dir/$name.out" | tail -n 1 | sed 's/^ *//') ($((SECONDS - began)) s)"
}

# With the admin token. The membership changes and token revocation are left out: the fuzzer
# links `GET /v1/tokens` to `DELETE /v1/tokens/{name}` and revokes its own token; it would remove
# this node, the only member; and adding a node first asks the named address to prove it holds
# the secret, which from here no address but this node's can, so each try waits about five
# seconds for a 503 `node_unreachable` (as documented). They are exercised by `api::tests` and
# the cluster tests, and refused here by the run without a token.
run "with a token" -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth \
    --exclude-operation-id revoke_token --exclude-operation-id remove_node --exclude-operation-id add_node
# schemathesis holds each event of a stream to the document's event (its `data` a string); the
# `data` of each change is JSON, held here to the document's `Event`.
"$venv/bin/python" - "$dir/with a token.har" "$document" <<'EOF'
import json, sys
from urllib.parse import urlsplit

import jsonschema

har = json.load(open(sys.argv[1]))
doc = json.load(open(sys.argv[2]))
validator = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/Event", "components": doc["components"]})
streams, events, wrong = 0, 0, []
for entry in har["log"]["entries"]:
    response = entry["response"]
    if urlsplit(entry["request"]["url"]).path != "/v1/events" or response["status"] != 200:
        continue
    streams += 1
    for frame in response.get("content", {}).get("text", "").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "data" not in fields or fields.get("event") == "reset":
            continue
        events += 1
        problems = [error.message for error in validator.iter_errors(json.loads(fields["data"]))]
        if problems:
            wrong.append(f'{fields["data"][:200]}: {problems[0]}')
if wrong:
    sys.exit("events whose data is not an Event of the document:\n" + "\n".join(wrong[:10]))
print(f"ok   with a token: {events} events of {streams} event streams are Events of the document")
EOF

# Without a token: every guarded operation is a clear 401 (the checks above hold the bodies to
# the error schema; this holds that nothing else came back).
run "without a token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
"$venv/bin/python" - "$dir/without a token.har" docs/openapi.json <<'EOF'
import json, re, sys
from urllib.parse import urlsplit

har = json.load(open(sys.argv[1]))
doc = json.load(open(sys.argv[2]))
# Every documented operation as (method, path, path pattern, public). A method the document does
# not name for a path is 405 before any token is asked for, as it is on any route; a path without
# parameters wins over one with (`/v1/registrations/unregister` is not a registration's id).
operations = [(method.upper(), path, re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"),
               operation.get("security") == [])
              for path, item in doc["paths"].items() for method, operation in item.items()]

def unauthorized(response, soap):
    text = response.get("content", {}).get("text", "")
    if response["status"] != 401:
        return False
    if soap:
        return "unauthorized" in text
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") == "unauthorized"

seen, wrong = 0, []
for entry in har["log"]["entries"]:
    request, response = entry["request"], entry["response"]
    path = urlsplit(request["url"]).path
    exact = path in doc["paths"]
    matched = [public for method, template, pattern, public in operations
               if method == request["method"] and (template == path if exact else pattern.match(path))]
    if response["status"] == 405 and not matched:
        continue
    if matched and matched[0]:
        continue
    seen += 1
    if not unauthorized(response, path == "/v1/soap/registration"):
        text = response.get("content", {}).get("text", "")[:200]
        wrong.append(f'{request["method"]} {request["url"]}: {response["status"]} {text}')
if not seen:
    sys.exit("no guarded operation was called without a token")
if wrong:
    sys.exit("answers without a token that are not 401 unauthorized:\n" + "\n".join(wrong[:20]))
print(f"ok   without a token: all {seen} requests to guarded operations answered 401 unauthorized")
EOF
