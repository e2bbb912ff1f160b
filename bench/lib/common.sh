# shellcheck shell=bash
# Helpers shared by the benchmark scripts: logging, mode switches, process tracking and cleanup,
# readiness waits, and reading CPU time and memory from /proc.
#
# Scripts source this file after `set -euo pipefail`. The driver (bench/run.sh) exports:
#   BENCH_MODE   quick | full
#   BENCH_RUN    scratch directory of this run (data dirs, configs, logs)
#   BENCH_OUT    where each benchmark writes its JSON result
#   BENCH_BIN    the switchboard binary; BENCH_KIT / BENCH_REGLOAD the example binaries
#   BENCH_OHA    the oha binary, or empty when the benchkit open-loop fallback is used
#   SWITCHBOARD_CLUSTER_SECRET  a fresh secret for every cluster of the run

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

is_quick() { [[ "${BENCH_MODE:-quick}" == quick ]]; }

# by_mode QUICK FULL: prints the value for the current mode.
by_mode() { if is_quick; then echo "$1"; else echo "$2"; fi; }

# --- processes ---------------------------------------------------------------------------------

# PIDs this script started. Cleanup only signals a PID whose command line still mentions this
# run's scratch directory, so a recycled PID is never hit.
TRACKED_PIDS=()

track() { TRACKED_PIDS+=("$1"); }

ours() {
    local cmdline
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
    [[ "$cmdline" == *"$BENCH_RUN"* ]]
}

# stop_pid PID [SIGNAL]: signals the process and waits up to 5 s for it to go (then SIGKILL).
stop_pid() {
    local pid=$1 signal=${2:-TERM}
    ours "$pid" || return 0
    kill "-$signal" "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        ours "$pid" || return 0
        if [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]]; then return 0; fi
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$? pid file
    for pid in "${TRACKED_PIDS[@]}"; do stop_pid "$pid"; done
    # Nodes are started detached (see bench/lib/node.sh) and leave their PID in a file.
    for file in "$BENCH_RUN"/*/node*.pid; do
        [[ -e "$file" ]] && stop_pid "$(cat "$file")"
    done
    exit "$status"
}

install_cleanup() {
    : "${BENCH_RUN:?run the benchmarks through bench/run.sh}" "${BENCH_OUT:?run the benchmarks through bench/run.sh}"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# port_busy PORT: true when something already listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

require_free_ports() {
    local port
    for port in "$@"; do
        ! port_busy "$port" || die "port $port is already in use; set BENCH_PORT_BASE to move the suite"
    done
}

# wait_http URL [SECONDS [PID]]: waits until URL answers 2xx; fails after SECONDS (default 30),
# or as soon as process PID (when given) has exited.
wait_http() {
    local url=$1 limit=${2:-30} pid=${3:-} deadline
    deadline=$((SECONDS + limit))
    until curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; do
        ((SECONDS < deadline)) || die "$url did not answer 2xx within ${limit}s"
        [[ -z "$pid" ]] || ours "$pid" || die "the process behind $url (PID $pid) exited"
        sleep 0.02
    done
}

# --- /proc measurements --------------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK) # used by the scripts that source this file
export CLK_TCK

# cpu_ticks PID...: utime+stime (all threads) summed over the given processes, in clock ticks.
cpu_ticks() {
    local pid total=0 fields
    for pid in "$@"; do
        # Drop "pid (comm) " first: comm may contain spaces. Then utime, stime are fields 12, 13.
        fields=$(sed 's/^.*) //' "/proc/$pid/stat")
        total=$((total + $(awk '{print $12 + $13}' <<<"$fields")))
    done
    echo "$total"
}

# rss_kb PID: resident memory (VmRSS) in KiB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# dir_bytes DIR: apparent size of everything under DIR, in bytes.
dir_bytes() { du -sb "$1" | awk '{print $1}'; }

# json_get FILE|- EXPR: evaluates a Python expression over the parsed JSON `j` and prints it.
json_get() {
    local src=$1 expr=$2
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1]) if sys.argv[1] != "-" else sys.stdin); print(eval(sys.argv[2]))' "$src" "$expr"
}

# --- reference servers ---------------------------------------------------------------------------

# start_nginx NAME CORE CONF_BODY: runs nginx in the foreground, pinned to CORE, with the given
# `http {}` body; records the master PID in NGINX_PID[NAME] (workers are its children).
declare -A NGINX_PID=()
start_nginx() {
    local name=$1 core=$2 body=$3 dir="$BENCH_RUN/nginx-$1"
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
$body
}
EOF
    taskset -c "$core" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    NGINX_PID[$name]=$!
    track "$!"
}

# nginx_pids NAME: the master and its workers.
nginx_pids() {
    local master=${NGINX_PID[$1]}
    echo "$master" "$(pgrep -P "$master" | paste -sd' ' || true)"
}

# start_backend PORT CORE: the trivial backend every benchmark routes to (200 "ok", keep-alive).
start_backend() {
    # /forwarded answers the forwarding headers it received, so B1 can check that every proxy
    # adds the same ones.
    start_nginx backend "$2" "    server { listen 127.0.0.1:$1 backlog=4096; location / { return 200 \"ok\"; }
        location = /forwarded { return 200 \"for=\$http_x_forwarded_for proto=\$http_x_forwarded_proto host=\$http_x_forwarded_host via=\$http_via\"; } }"
    wait_http "http://127.0.0.1:$1/" 30 "${NGINX_PID[backend]}"
}

# --- Switchboard clusters ------------------------------------------------------------------------

NODE_SH="$BENCH_ROOT/lib/node.sh"

api_url() { echo "http://127.0.0.1:$(($1 + 10 * $2 + 1))"; }  # api_url BASE ID
data_url() { echo "http://127.0.0.1:$(($1 + 10 * $2))"; }     # data_url BASE ID
node_pid() { cat "$1/node$2.pid"; }                            # node_pid DIR ID

# show_logs DIR: the end of every node log of a cluster, to explain a failure.
show_logs() {
    local file
    for file in "$1"/node*.log; do
        [[ -e "$file" ]] || continue
        log "--- last lines of $file"
        tail -n 15 "$file" >&2
    done
}

# start_cluster DIR BASE SIZE [serve flags...]: starts SIZE nodes that bootstrap together and
# waits until every one is ready. The nodes run with --default-check "${BENCH_DEFAULT_CHECK:-none}":
# B3 and B6 register addresses that do not exist, and B1 to B7 measure what they measured before
# active checks existed; B10 turns the checks on.
start_cluster() {
    local dir=$1 base=$2 size=$3 id
    shift 3
    bash "$NODE_SH" init "$dir" "$base" "$size" --default-check "${BENCH_DEFAULT_CHECK:-none}" "$@"
    for id in $(seq "$size"); do bash "$NODE_SH" start "$dir" "$id"; done
    for id in $(seq "$size"); do
        bash "$NODE_SH" ready "$dir" "$id" || {
            show_logs "$dir"
            die "node $id of $dir did not become ready"
        }
    done
}

# leader_id BASE SIZE: the leader as the first node that answers knows it.
leader_id() {
    local id leader
    for id in $(seq "$2"); do
        leader=$(curl -fsS --max-time 2 "$(api_url "$1" "$id")/v1/cluster" | json_get - 'j["leader_id"]' 2>/dev/null) || continue
        [[ "$leader" != None ]] && echo "$leader" && return 0
    done
    die "no node knows a leader"
}

# register API_URL ADDRESS NAMESPACE NAME: one registration; fails unless acknowledged.
register() {
    curl -fsS --max-time 10 -o /dev/null -XPOST "$1/v1/registrations" -H 'content-type: application/json' \
        -d "{\"address\":\"$2\",\"contract_namespace\":\"$3\",\"contract_name\":\"$4\"}" ||
        die "registering $2 for $3/$4 at $1 failed"
}

# wait_routable DATA_URL CONTRACT: waits until the node routes CONTRACT to a 2xx answer.
wait_routable() {
    local deadline=$((SECONDS + 30))
    until curl -fsS -o /dev/null --max-time 1 -H "X-Switchboard-Contract: $2" "$1/"; do
        ((SECONDS < deadline)) || die "$1 does not route $2 after 30 s"
        sleep 0.05
    done
}

# sweep_run_processes: stops every process whose command line names this run's scratch
# directory; the driver's safety net for a benchmark that was killed before its own cleanup.
sweep_run_processes() {
    local proc
    for proc in /proc/[0-9]*; do
        [[ "${proc#/proc/}" == "$$" ]] && continue
        ours "${proc#/proc/}" 2>/dev/null && stop_pid "${proc#/proc/}"
    done
    return 0
}
