#!/usr/bin/env bash
# B10: active health checks at scale.
#
# A 3-node cluster (default check tcp) and COUNT endpoints, local listeners that `benchkit
# health` opens, each registered with a tcp check every second (timeout 1 s, fall 3). Once every
# endpoint has its prober, a stable window measures the nodes' CPU per probe (all of each node's
# CPU, so an upper bound), the probes per node (the spread of the assignment) and the Raft log
# entries written (target 0). Then KILL endpoints are closed at once, and per endpoint the time
# until every node lists it critical gives p50 and p99 (target p99 under interval x fall +
# timeout + 200 ms = 4200 ms).
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
install_cleanup

BASE=$((${BENCH_PORT_BASE:-19000} + 700))
DIR="$BENCH_RUN/health"
COUNT=${B10_COUNT:-$(by_mode 1000 10000)}
KILL=100
WINDOW=$(by_mode 10 60)

# Every endpoint is a listener of benchkit's: it needs COUNT descriptors and some to spare.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n)
if [[ "$FDS" != unlimited ]] && ((FDS < COUNT + 512)); then
    is_quick || die "B10 needs $((COUNT + 512)) open files for $COUNT endpoints; this shell allows $FDS"
    COUNT=$((FDS - 512))
    ((COUNT >= 200)) || die "B10 needs at least 712 open files; this shell allows $FDS"
    log "only $FDS open files allowed: B10 quick runs $COUNT endpoints"
fi
BENCH_DEFAULT_CHECK=tcp start_cluster "$DIR" "$BASE" 3 --probe-concurrency 1024
nodes=()
for id in 1 2 3; do nodes+=(--node "$id,$(api_url "$BASE" "$id"),$(cat "$DIR/node$id.pid")"); done
log "B10 $COUNT endpoints, a ${WINDOW}s stable window, $KILL killed at once"
"$BENCH_KIT" health "${nodes[@]}" --count "$COUNT" --kill "$KILL" --interval-ms 1000 --window-s "$WINDOW" \
    >"$BENCH_OUT/b10.json" 2>"$DIR/benchkit.err" || {
    show_logs "$DIR"
    log "--- benchkit health said"
    tail -n 20 "$DIR/benchkit.err" >&2
    die "B10 could not run: $(grep -m1 '^Error' "$DIR/benchkit.err" || tail -n 1 "$DIR/benchkit.err")"
}
cat "$DIR/benchkit.err" >&2
cat "$BENCH_OUT/b10.json" >&2
[[ "$(json_get "$BENCH_OUT/b10.json" 'j["critical_everywhere"] == j["killed"]')" == True ]] ||
    die "B10: not every killed endpoint turned critical on every node"
[[ "$(json_get "$BENCH_OUT/b10.json" 'j["log_entries_per_minute"] == 0')" == True ]] ||
    die "B10: the log grew while nothing changed"
log "B10 done"
