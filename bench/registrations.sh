#!/usr/bin/env bash
# B3: registrations per second through Raft with durable flush.
#
# A 3-node cluster on loopback (data dirs in the run's scratch directory, default flush
# settings: nothing is acknowledged before a majority flushed it). `regload` registers unique
# addresses with 1 and with 64 concurrent clients, sent to the leader and sent to a follower
# (which forwards to the leader). Every (clients, target, repetition) gets a fresh cluster so
# that an earlier cell's registrations never slow a later one. Reports registrations/s and
# p50/p99 latency; the fdatasync probe in the machine facts is the single-writer reference.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
install_cleanup

BASE=$((${BENCH_PORT_BASE:-19000} + 300))
SECONDS_PER_CELL=$(by_mode 3 15)
REPS=$(by_mode 1 3)
RUNS="$BENCH_RUN/b3-runs.jsonl"

# cell VIA CLIENTS REP: one measurement on a fresh cluster; VIA is leader or follower.
cell() {
    local via=$1 clients=$2 rep=$3 dir="$BENCH_RUN/b3-$1-$2-$3" leader target id
    start_cluster "$dir" "$BASE" 3
    leader=$(leader_id "$BASE" 3)
    target=$leader
    if [[ "$via" == follower ]]; then
        for id in 1 2 3; do [[ "$id" != "$leader" ]] && target=$id && break; done
    fi
    log "B3 $clients client(s) to the $via (node $target), rep $rep, ${SECONDS_PER_CELL}s"
    "$BENCH_REGLOAD" --targets "$(api_url "$BASE" "$target")" --clients "$clients" \
        --seconds "$SECONDS_PER_CELL" --tag "b3-$via-$clients-$rep" |
        python3 -c 'import json,sys; j=json.load(sys.stdin); j["via"]=sys.argv[1]; print(json.dumps(j))' "$via" |
        tee -a "$RUNS" >&2
    [[ "$(tail -n 1 "$RUNS" | json_get - 'j["ok"]')" -gt 0 ]] || {
        show_logs "$dir"
        die "B3: no registration was acknowledged ($via, $clients clients)"
    }
    for id in 1 2 3; do bash "$NODE_SH" stop "$dir" "$id"; done
    rm -rf "$dir"
}

: >"$RUNS"
for rep in $(seq "$REPS"); do
    for clients in 1 64; do
        for via in leader follower; do cell "$via" "$clients" "$rep"; done
    done
done
python3 "$BENCH_ROOT/lib/stats.py" b3 "$RUNS" --seconds "$SECONDS_PER_CELL" --reps "$REPS" >"$BENCH_OUT/b3.json"
log "B3 done"
