#!/usr/bin/env bash
# B5: from a registration acknowledged on one node to routable on every node.
#
# A 3-node cluster and one backend. `benchkit propagation` registers a fresh contract (pointing
# at the backend) on each node in turn, one at a time, and as soon as the registration is
# acknowledged polls the data plane of all three nodes with that contract until each routes it
# to the backend (2xx). Per registration: the slowest node's time from the acknowledgement to
# its first routed answer (poll answer included, so it errs on the slow side). p50/p99/max.
#
# Then blocking reads on the same cluster: `benchkit watchers` keeps 100 watchers of one contract
# (blocking reads with `?index=&wait=`, spread over the three nodes) and registers into it one at
# a time; per registration and watcher, the time from the registration sent (its commit included)
# to the answer that holds it, and from its acknowledgement. And the same with the event stream
# (`--stream`: 100 streams of `GET /v1/events?contract=`, each change sent once to each).
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
install_cleanup

BASE=$((${BENCH_PORT_BASE:-19000} + 500))
BACKEND_PORT=$((BASE + 80))
DIR="$BENCH_RUN/propagation"
COUNT=$(by_mode 100 1000)

require_free_ports "$BACKEND_PORT"
start_backend "$BACKEND_PORT" 1
start_cluster "$DIR" "$BASE" 3
apis=$(for id in 1 2 3; do api_url "$BASE" "$id"; done | paste -sd,)
datas=$(for id in 1 2 3; do data_url "$BASE" "$id"; done | paste -sd,)
log "B5 $COUNT registrations"
"$BENCH_KIT" propagation --apis "$apis" --datas "$datas" --backend "http://127.0.0.1:$BACKEND_PORT/" \
    --count "$COUNT" --gap-ms 10 --timeout-ms 5000 --max-seconds 600 --tag "b5" >"$BENCH_OUT/b5.json" || {
    show_logs "$DIR"
    die "B5 could not run"
}
cat "$BENCH_OUT/b5.json" >&2
[[ "$(json_get "$BENCH_OUT/b5.json" 'j["measured"]')" -gt 0 ]] || die "B5: no registration was measured"
log "B5 blocking reads: 100 watchers"
"$BENCH_KIT" watchers --apis "$apis" --watchers 100 --changes "$(by_mode 20 200)" --gap-ms 10 --timeout-ms 5000 \
    --max-seconds 300 >"$BENCH_OUT/b5_watch.json" || {
    show_logs "$DIR"
    die "B5: the watchers could not run"
}
cat "$BENCH_OUT/b5_watch.json" >&2
[[ "$(json_get "$BENCH_OUT/b5_watch.json" 'j["measured"]')" -gt 0 ]] || die "B5: no registration reached every watcher"
log "B5 event streams: 100 watchers"
"$BENCH_KIT" watchers --stream --apis "$apis" --watchers 100 --changes "$(by_mode 20 200)" --gap-ms 10 \
    --timeout-ms 5000 --max-seconds 300 >"$BENCH_OUT/b5_stream.json" || {
    show_logs "$DIR"
    die "B5: the event-stream watchers could not run"
}
cat "$BENCH_OUT/b5_stream.json" >&2
[[ "$(json_get "$BENCH_OUT/b5_stream.json" 'j["missed"]')" -eq 0 ]] || die "B5: an event stream missed a registration"
[[ "$(json_get "$BENCH_OUT/b5_stream.json" 'j["measured"]')" -gt 0 ]] || die "B5: no registration reached every stream"
log "B5 done"
