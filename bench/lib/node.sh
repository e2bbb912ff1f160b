#!/usr/bin/env bash
# Starts and stops the Switchboard nodes of one benchmark cluster.
#
#   node.sh init  CLUSTER_DIR BASE_PORT SIZE [serve flags...]   write the cluster's settings
#   node.sh start CLUSTER_DIR ID     start node ID detached (PID in CLUSTER_DIR/nodeID.pid)
#   node.sh ready CLUSTER_DIR ID     wait until node ID answers /health/ready (at most 30 s)
#   node.sh stop  CLUSTER_DIR ID     SIGTERM node ID and wait for it to exit
#
# Node ID listens on data BASE+10*ID, control API BASE+10*ID+1, peer BASE+10*ID+2. Nodes outlive
# this helper, so a one-shot command (hyperfine's timed command, for instance) can start one;
# the benchmark's cleanup finds them through their PID files. CLUSTER_DIR must sit directly
# under BENCH_RUN. Set CLUSTER_PIN (a core
# list for taskset) in the environment of `init` to pin every node.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

data_port() { echo $((CL_BASE + 10 * $1)); }
api_port() { echo $((CL_BASE + 10 * $1 + 1)); }
peer_port() { echo $((CL_BASE + 10 * $1 + 2)); }

init() {
    local dir=$1 base=$2 size=$3 peers="" id
    shift 3
    mkdir -p "$dir"
    for id in $(seq "$size"); do peers+="${peers:+,}$id=127.0.0.1:$((base + 10 * id + 2))"; done
    {
        printf 'CL_BASE=%q\nCL_SIZE=%q\nCL_PEERS=%q\nCL_PIN=%q\n' "$base" "$size" "$peers" "${CLUSTER_PIN:-}"
        printf 'CL_ARGS=('
        (($#)) && printf '%q ' "$@"
        printf ')\n'
    } >"$dir/cluster.env"
}

start() {
    local dir=$1 id=$2 pin=()
    [[ -n "$CL_PIN" ]] && pin=(taskset -c "$CL_PIN")
    require_free_ports "$(data_port "$id")" "$(api_port "$id")" "$(peer_port "$id")"
    "${pin[@]}" "$BENCH_BIN" serve --node-id "$id" --data-dir "$dir/node$id" \
        --data-addr "127.0.0.1:$(data_port "$id")" --api-addr "127.0.0.1:$(api_port "$id")" \
        --peer-addr "127.0.0.1:$(peer_port "$id")" --peers "$CL_PEERS" "${CL_ARGS[@]}" \
        </dev/null >>"$dir/node$id.log" 2>&1 &
    echo "$!" >"$dir/node$id.pid"
}

ready() { wait_http "http://127.0.0.1:$(api_port "$2")/health/ready" 30 "$(cat "$1/node$2.pid")"; }

stop() {
    local file="$1/node$2.pid"
    [[ -e "$file" ]] || return 0
    stop_pid "$(cat "$file")" TERM
    rm -f "$file"
}

command=$1
shift
case "$command" in
init) init "$@" ;;
start | ready | stop)
    # shellcheck disable=SC1091 # written by `init`
    source "$1/cluster.env"
    "$command" "$@"
    ;;
*) die "unknown command $command" ;;
esac
