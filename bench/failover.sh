#!/usr/bin/env bash
# B4: unavailability of writes after SIGKILL of the leader, and routed requests lost meanwhile.
#
# A 3-node cluster and one backend. Each trial (`benchkit failover`) finds the leader, then sends
# a registration every 5 ms, each to a random surviving node, and routes requests at a steady
# rate through the surviving nodes to the backend. After a second it SIGKILLs the leader.
#   - write unavailability: from the kill to the first acknowledged write sent after it;
#   - routed requests that failed (non-2xx or transport error) during the whole trial;
#   - acknowledged writes missing from a linearizable read afterwards (must be 0).
# Between trials the killed node is restarted and every node must answer /health/ready.
# Then the large-state row: the registry is filled with registrations of 15 KiB of metadata
# (100 MB in all; 5 MB in quick mode) and the same trial runs again.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
install_cleanup

BASE=$((${BENCH_PORT_BASE:-19000} + 400))
BACKEND_PORT=$((BASE + 80))
DIR="$BENCH_RUN/failover"
CONTRACT="urn:bench/IFailover"
TRIALS=$(by_mode 3 20)
TRIALS_FILE="$BENCH_RUN/b4-trials.jsonl"
LARGE_MB=$(by_mode 5 100)
LARGE_TRIALS=$(by_mode 1 5)

# node_args: benchkit's description of every node, `--node id,api,data,pid`.
node_args() {
    local id
    for id in 1 2 3; do
        printf -- '--node\n%s,%s,%s,%s\n' "$id" "$(api_url "$BASE" "$id")" "$(data_url "$BASE" "$id")" "$(node_pid "$DIR" "$id")"
    done
}

# all_ready: every node answers /health/ready and routes the benchmark contract.
all_ready() {
    local id
    for id in 1 2 3; do
        bash "$NODE_SH" ready "$DIR" "$id" || {
            show_logs "$DIR"
            die "node $id is not ready"
        }
        wait_routable "$(data_url "$BASE" "$id")" "$CONTRACT"
    done
}

trial() {
    local n=$1 result killed args file=${2:-$TRIALS_FILE}
    mapfile -t args < <(node_args)
    result=$("$BENCH_KIT" failover "${args[@]}" --contract "$CONTRACT" --write-every-ms 5 \
        --data-rate 400 --before-ms 1000 --after-ms 500 --max-ms 10000 --tag "t$n") || {
        show_logs "$DIR"
        die "failover trial $n could not run"
    }
    echo "$result" >>"$file"
    log "B4 trial $n: $result"
    killed=$(json_get - 'j["killed_node"]' <<<"$result")
    rm -f "$DIR/node$killed.pid"
    bash "$NODE_SH" start "$DIR" "$killed"
    all_ready
}

require_free_ports "$BACKEND_PORT"
start_backend "$BACKEND_PORT" 1
start_cluster "$DIR" "$BASE" 3
register "$(api_url "$BASE" 1)" "http://127.0.0.1:$BACKEND_PORT/" "${CONTRACT%/*}" "${CONTRACT##*/}"
all_ready
: >"$TRIALS_FILE"
for n in $(seq "$TRIALS"); do trial "$n"; done
python3 "$BENCH_ROOT/lib/stats.py" b4 "$TRIALS_FILE" >"$BENCH_OUT/b4.json"

log "B4 large state: filling $LARGE_MB MB"
apis=$(for id in 1 2 3; do printf '%s,' "$(api_url "$BASE" "$id")"; done)
count=$((LARGE_MB * 1024 / 15))
fill=$("$BENCH_KIT" fill --targets "${apis%,}" --count "$count" --clients 16 --metadata-kb 15 --max-seconds 900 --tag b4-large)
log "B4 large fill: $fill"
[[ "$(json_get - 'j["ok"] == j["count"]' <<<"$fill")" == True ]] || die "B4: the large-state fill fell short"
LARGE_FILE="$BENCH_RUN/b4-large-trials.jsonl"
: >"$LARGE_FILE"
for n in $(seq "$LARGE_TRIALS"); do trial "large-$n" "$LARGE_FILE"; done
python3 "$BENCH_ROOT/lib/stats.py" b4 "$LARGE_FILE" |
    python3 -c 'import json,sys; j=json.load(sys.stdin); j["state_mb"]=int(sys.argv[1]); j["registrations"]=int(sys.argv[2]); print(json.dumps(j))' \
        "$LARGE_MB" "$count" >"$BENCH_OUT/b4_large.json"
log "B4 done"
