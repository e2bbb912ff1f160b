#!/usr/bin/env bash
# Lints every Prometheus exposition a node serves with the real linter, `promtool check metrics`
# (Debian's prometheus package): `/metrics` and the per-contract `/v1/health/metrics` of each
# node of a dev cluster (`switchboard dev`: three nodes, sample services with http checks),
# after one routed request, so counters, histograms and per-contract series all hold samples.
#
#   bash scripts/metrics-lint.sh [SWITCHBOARD_BINARY]
#
# Environment: METRICS_LINT_BASE_PORT (default 17500; the cluster uses BASE+10 to BASE+99 and
# its samples a few ports above).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-}
if [[ -z "$bin" ]]; then
    cargo build --locked --bin switchboard
    target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    bin="$target_dir/debug/switchboard"
fi
command -v promtool >/dev/null || {
    echo "error: promtool is missing (apt-get install --no-install-recommends prometheus)" >&2
    exit 1
}

base=${METRICS_LINT_BASE_PORT:-17500}
dir=$(mktemp -d)
"$bin" dev --dir "$dir/data" --base-port "$base" >"$dir/dev.log" 2>&1 &
dev=$!
cleanup() {
    kill "$dev" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$dev" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$dev" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    tail -n 30 "$dir/dev.log" >&2
    exit 1
}

# until SECONDS COMMAND...: runs COMMAND every 200 ms until it succeeds or SECONDS pass.
until_ok() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

api() { echo "http://127.0.0.1:$((base + 10 * $1 + 1))"; }
data() { echo "http://127.0.0.1:$((base + 10 * $1))"; }
samples_checked() { curl -sf "$(api "$1")/v1/health/metrics" | grep -q '^switchboard_health_contract_probes_total{contract="urn:switchboard:samples/'; }

for node in 1 2 3; do
    until_ok 60 curl -sf "$(api "$node")/health/ready" || fail "node $node not ready within 60 s"
done
until_ok 60 samples_checked 1 || fail "no sample contract in node 1's health metrics within 60 s"
until_ok 30 curl -sf -H 'x-switchboard-contract: urn:switchboard:samples/IEcho' "$(data 1)/hello" ||
    fail "no request routed to a sample within 30 s"

for node in 1 2 3; do
    for path in /metrics /v1/health/metrics; do
        scrape=$(curl -sf "$(api "$node")$path") || fail "GET $path on node $node"
        [[ -n "$scrape" ]] || fail "GET $path on node $node is empty"
        said=$(promtool check metrics <<<"$scrape" 2>&1) || fail "promtool on node $node's $path: $said"
        echo "ok   node $node $path: $(grep -vc '^#' <<<"$scrape") samples, promtool check metrics is clean"
    done
done
