#!/usr/bin/env bash
# B6 (memory and disk) and B7 (restart time) on one 3-node cluster.
#
# B6: resident memory (VmRSS) of every node and the size of its data directory when idle, after
#   N1 and after N2 registrations of about 200 bytes each (`benchkit fill`, 64 clients spread
#   over the nodes), with `--snapshot-every 1000`. Before each measurement every node has applied
#   the same index and has compacted its log into a snapshot covering everything written so far
#   (`benchkit compact` re-registers one fixed registration until the snapshots catch up; with
#   group commit, 100,000 registrations are far fewer log entries than that). After N2 it is
#   measured twice: right after the load (freed memory that the allocator has not yet returned
#   counts) and settled, 15 s later (jemalloc returns freed pages within its 10 s decay); the
#   target is checked on the settled figure, and both are reported.
# B7: restart time of a follower holding N2 registrations: hyperfine times "start the node and
#   poll /health/ready until 200", with a graceful stop of the node before each run.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
install_cleanup

BASE=$((${BENCH_PORT_BASE:-19000} + 600))
DIR="$BENCH_RUN/footprint"
SNAPSHOT_EVERY=1000
N1=$(by_mode 2000 10000)
N2=$(by_mode 10000 100000)
RESTARTS=$(by_mode 2 5)
STAGES="$BENCH_RUN/b6-stages.jsonl"

# converge [SETTLE]: waits until every node reports the same applied index (at most 60 s), then
# SETTLE seconds more (default 2) for memory to settle.
converge() {
    local deadline=$((SECONDS + 60)) indexes
    while :; do
        indexes=$(for id in 1 2 3; do
            curl -fsS --max-time 2 "$(api_url "$BASE" "$id")/v1/cluster" | json_get - 'j["last_applied_index"]'
        done | sort -u | wc -l)
        ((indexes == 1)) && break
        ((SECONDS < deadline)) || die "nodes did not converge to one applied index within 60 s"
        sleep 0.2
    done
    sleep "${1:-2}"
}

# compact: makes every node snapshot (and purge) the log written so far.
compact() {
    local result
    result=$("$BENCH_KIT" compact --apis "$(apis)" --max-writes $((SNAPSHOT_EVERY * 4)) --max-seconds 120) ||
        die "B6: the nodes did not snapshot their log"
    log "B6 compaction took $(json_get - 'j["writes"]' <<<"$result") extra writes"
}

apis() { for id in 1 2 3; do api_url "$BASE" "$id"; done | paste -sd,; }

# stage LABEL REGISTRATIONS: one JSON line with every node's RSS, data-dir size and log indexes.
stage() {
    local label=$1 count=$2 id args=()
    for id in 1 2 3; do
        args+=("$id" "$(rss_kb "$(node_pid "$DIR" "$id")")" "$(dir_bytes "$DIR/node$id")"
            "$(curl -fsS --max-time 2 "$(api_url "$BASE" "$id")/v1/cluster")")
    done
    python3 - "$label" "$count" "${args[@]}" >>"$STAGES" <<'EOF'
import json, sys
label, count, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
nodes = []
for i in range(0, len(rest), 4):
    view = json.loads(rest[i + 3])
    nodes.append({"id": int(rest[i]), "rss_kib": int(rest[i + 1]), "data_dir_bytes": int(rest[i + 2]),
                  **{k: view.get(k) for k in ("role", "last_log_index", "last_applied_index", "snapshot_index", "purged_index")}})
print(json.dumps({"stage": label, "registrations": count, "nodes": nodes}))
EOF
    log "B6 $label: $(tail -n 1 "$STAGES")"
}

# fill_to TOTAL CURRENT: registers TOTAL-CURRENT more, spread over all nodes.
fill_to() {
    local result
    result=$("$BENCH_KIT" fill --targets "$(apis)" --count "$(($1 - $2))" --clients 64 --max-seconds 600 --tag "b6-$1")
    log "B6 fill: $result"
    echo "$result" >>"$BENCH_RUN/b6-fills.jsonl"
    [[ "$(json_get - 'j["ok"] == j["count"]' <<<"$result")" == True ]] || die "B6: fill to $1 fell short"
}

# restart_time: hyperfine over "start a follower and wait until it is ready".
restart_time() {
    local follower id leader
    leader=$(leader_id "$BASE" 3)
    for id in 1 2 3; do [[ "$id" != "$leader" ]] && follower=$id && break; done
    log "B7 restarting node $follower (a follower) $RESTARTS times"
    hyperfine --runs "$RESTARTS" --style basic --export-json "$BENCH_RUN/b7-hyperfine.json" \
        --prepare "bash '$NODE_SH' stop '$DIR' $follower" \
        "bash '$NODE_SH' start '$DIR' $follower && bash '$NODE_SH' ready '$DIR' $follower" >&2
    converge
    stage after-restart "$N2"
    echo "$follower"
}

start_cluster "$DIR" "$BASE" 3 --snapshot-every "$SNAPSHOT_EVERY"
: >"$STAGES"
: >"$BENCH_RUN/b6-fills.jsonl"
converge
stage idle 0
fill_to "$N1" 0
converge 0
compact
converge
stage "$N1" "$N1"
fill_to "$N2" "$N1"
converge 0
compact
converge
stage "$N2" "$N2"
sleep "$(by_mode 2 15)"
stage settled "$N2"
restarted=$(restart_time)

python3 - "$STAGES" "$BENCH_RUN/b6-fills.jsonl" "$BENCH_RUN/b7-hyperfine.json" "$restarted" "$SNAPSHOT_EVERY" \
    >"$BENCH_OUT/b6.json" <<'EOF'
import json, statistics, sys
stages = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fills = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
hf = json.load(open(sys.argv[3]))["results"][0]
restarted, snapshot_every = int(sys.argv[4]), int(sys.argv[5])
payload = sum(f["payload_bytes_avg"] * f["ok"] for f in fills) / max(1, sum(f["ok"] for f in fills))
summary = []
for s in stages:
    rss = [n["rss_kib"] / 1024 for n in s["nodes"]]
    disk = [n["data_dir_bytes"] / 2**20 for n in s["nodes"]]
    summary.append({"stage": s["stage"], "registrations": s["registrations"],
                    "rss_mib_max": max(rss), "rss_mib_mean": statistics.mean(rss),
                    "data_dir_mib_max": max(disk), "data_dir_mib_mean": statistics.mean(disk)})
by = {s["stage"]: s for s in summary}
first, last = summary[0], [s for s in summary if s["stage"] != "after-restart"][-1]
n = last["registrations"]
out = {
    "snapshot_every": snapshot_every,
    "payload_bytes_avg": payload,
    "fill_per_second": [f["per_second"] for f in fills],
    "stages": summary,
    "raw": stages,
    "rss_bytes_per_registration": (last["rss_mib_mean"] - first["rss_mib_mean"]) * 2**20 / n if n else None,
    "disk_bytes_per_registration": last["data_dir_mib_mean"] * 2**20 / n if n else None,
    "disk_x_payload": (last["data_dir_mib_mean"] * 2**20 / n) / payload if n and payload else None,
    "b7": {"node": restarted, "registrations": n, "runs": len(hf["times"]),
           "mean_s": hf["mean"], "median_s": hf["median"], "min_s": hf["min"], "max_s": hf["max"],
           "times_s": hf["times"]},
}
json.dump(out, sys.stdout, indent=1)
EOF
log "B6/B7 done"
