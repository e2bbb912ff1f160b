#!/usr/bin/env bash
# B1 and B2: the data plane of one Switchboard node against nginx and HAProxy.
#
# One trivial backend (nginx `return 200 "ok"`) is reached four ways: directly, through nginx,
# through HAProxy and through a one-node Switchboard cluster. Every proxy is held to one worker
# and pinned to core 0; the load tool and the backend share core 1. nginx and HAProxy add the
# forwarding headers Switchboard adds (X-Forwarded-For, -Proto, -Host and Via), so all three do
# the same work. Every run also records the machine's CPU steal over it.
#
# B1 (throughput): closed-loop `wrk -t1 -c64` against each target; requests/s, the ratio of
#   Switchboard to each reference, and the proxy's CPU time per request (utime+stime from
#   /proc/PID/stat over the measured run, divided by the requests served), each a median of
#   B1_REPS repetitions with every target interleaved in each (min and max reported). Shapes:
#   a GET routed by `X-Switchboard-Contract`, and a SOAP call (POST, a 2 KB envelope, a dozen
#   headers) routed by its SOAPAction (`soapaction`) or, with an empty SOAPAction, by the
#   namespace of its body (`body`); nginx and HAProxy pass the SOAP call on as it is. A third
#   shape, `wsa`, is a WCF client's SOAP 1.2 call with WS-Addressing, whose `To` Switchboard
#   rewrites (direct, nginx and Switchboard).
# B2 (added latency): open loop at half the slowest proxy's B1 rate, with `oha -q RATE
#   --latency-correction` (or benchkit's open-loop fallback); the p50/p99/p99.9 a proxy adds over
#   the direct call of the same repetition, median (and min, max) of B2_REPS interleaved ones.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
install_cleanup

BASE=${BENCH_PORT_BASE:-19000}
BACKEND_PORT=$((BASE + 80))
NGINX_PORT=$((BASE + 81))
HAPROXY_PORT=$((BASE + 82))
SB_BASE=$((BASE + 100)) # node 1: data +10, api +11, peer +12
CONTRACT="urn:bench/IEcho"
CONNECTIONS=64

B1_SECONDS=$(by_mode 3 10)
B1_WARMUP=$(by_mode 1 3)
# B1_REPS and B2_REPS may be set for a run by hand (fewer repetitions of one benchmark).
B1_REPS=${B1_REPS:-$(by_mode 1 7)}
B2_SECONDS=$(by_mode 4 15)
B2_REPS=${B2_REPS:-$(by_mode 1 7)}

# steal_ticks: the machine's CPU steal so far (all CPUs, clock ticks; /proc/stat's eighth field).
steal_ticks() { awk '/^cpu / { print $9 }' /proc/stat; }

# --- the systems under test --------------------------------------------------------------------

start_proxies() {
    require_free_ports "$BACKEND_PORT" "$NGINX_PORT" "$HAPROXY_PORT"
    start_backend "$BACKEND_PORT" 1

    # nginx: one worker, upstream keep-alive, the forwarding headers Switchboard adds.
    start_nginx proxy 0 "    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; keepalive_requests 1000000; }
    map \$http_via \$via_out { \"\" \"1.1 nginx\"; default \"\$http_via, 1.1 nginx\"; }
    map \$http_x_forwarded_host \$forwarded_host { \"\" \$http_host; default \$http_x_forwarded_host; }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$forwarded_host;
            proxy_set_header Via \$via_out;
        }
    }"
    wait_http "http://127.0.0.1:$NGINX_PORT/" 30 "${NGINX_PID[proxy]}"

    # HAProxy: one thread, connections to the backend reused.
    local dir="$BENCH_RUN/haproxy"
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)] unless { req.hdr(x-forwarded-host) -m found }
    http-request add-header Via "1.1 haproxy"
    default_backend backend
backend backend
    server s1 127.0.0.1:$BACKEND_PORT
EOF
    taskset -c 0 haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    track "$HAPROXY_PID"
    wait_http "http://127.0.0.1:$HAPROXY_PORT/" 30 "$HAPROXY_PID"

    # Switchboard: a one-node cluster, one runtime worker, every thread on core 0.
    CLUSTER_PIN=0 start_cluster "$BENCH_RUN/dataplane" "$SB_BASE" 1 --worker-threads 1
    SB_PID=$(node_pid "$BENCH_RUN/dataplane" 1)
    register "$(api_url "$SB_BASE" 1)" "http://127.0.0.1:$BACKEND_PORT/" "${CONTRACT%/*}" "${CONTRACT##*/}"
    wait_routable "$(data_url "$SB_BASE" 1)" "$CONTRACT"
}

# target_url NAME / target_pids NAME: where each target listens and which processes serve it.
target_url() {
    case $1 in
    direct) echo "http://127.0.0.1:$BACKEND_PORT/" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT/" ;;
    haproxy) echo "http://127.0.0.1:$HAPROXY_PORT/" ;;
    switchboard | switchboard-general) echo "$(data_url "$SB_BASE" 1)/" ;;
    esac
}
target_pids() {
    case $1 in
    direct) nginx_pids backend ;;
    nginx) nginx_pids proxy ;;
    haproxy) echo "$HAPROXY_PID" ;;
    switchboard | switchboard-general) echo "$SB_PID" ;;
    esac
}

TARGETS=(direct nginx haproxy switchboard)

# check_forwarding: every proxy adds X-Forwarded-For, -Proto, -Host and Via, so that all three do
# the same work per request.
check_forwarding() {
    local target said
    for target in nginx haproxy switchboard; do
        said=$(curl -sf -H "X-Switchboard-Contract: $CONTRACT" -H "Host: client.example" \
            "$(target_url "$target")forwarded") || die "B1: GET /forwarded through $target failed"
        [[ "$said" =~ ^for=127\.0\.0\.1\ proto=http\ host=client\.example\ via=1\.1\ [a-z]+$ ]] ||
            die "B1: $target does not add the forwarding headers Switchboard adds: $said"
        log "B1 $target forwards: $said"
    done
}

# --- B1 ----------------------------------------------------------------------------------------

# soap_script ACTION SHAPE: a wrk script that POSTs a 2 KB SOAP envelope of contract $CONTRACT with
# a dozen headers. Shapes `soapaction` and `body`: SOAP 1.1, its SOAPAction header set to ACTION
# (empty: routed by the body). Shape `wsa`: what a WCF client with SOAP 1.2 and WS-Addressing 1.0
# sends, the action in the content type and an envelope header with Action, MessageID, ReplyTo
# and To (which Switchboard rewrites to the endpoint's address).
soap_script() {
    local path="$BENCH_RUN/soap-${2}.lua"
    python3 - "$1" "${CONTRACT%/*}" "$2" >"$path" <<'PY'
import sys
action, namespace, shape = sys.argv[1], sys.argv[2], sys.argv[3]
items = "".join(f"<item><id>{i}</id><name>product number {i}</name><qty>{i % 7 + 1}</qty></item>" for i in range(28))
body = f'<Echo xmlns="{namespace}"><order><customer>4711</customer>{items}</order></Echo>'
if shape == "get-general":
    # The GET of B1 with `X-Switchboard-Explain: 0`, which changes nothing but hands the request
    # from Switchboard's own HTTP/1.1 loop to its general (hyper) path: the before and after of
    # the own loop, measured in the same run.
    print('wrk.method = "GET"')
    print(f'wrk.headers["X-Switchboard-Contract"] = "{namespace}/{action}"')
    print('wrk.headers["X-Switchboard-Explain"] = "0"')
    sys.exit(0)
if shape == "wsa":
    envelope = (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing">'
        f'<s:Header><a:Action s:mustUnderstand="1">{action}</a:Action>'
        "<a:MessageID>urn:uuid:0b9e7c5d-4a31-6f1c-2a1e-9d8b4c6ea3f2</a:MessageID>"
        "<a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>"
        '<a:To s:mustUnderstand="1">http://router.example:8080/Services/EchoService.svc</a:To></s:Header>'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )
    content_type = {"Content-Type": f'application/soap+xml; charset=utf-8; action="{action}"'}
else:
    envelope = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
        f"<soap:Body>{body}</soap:Body>"
        "</soap:Envelope>"
    )
    content_type = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'}
    if shape == "general":
        content_type["X-Switchboard-Explain"] = "0"
headers = {
    **content_type,
    "User-Agent": "Apache-HttpClient/4.5.14 (Java/17.0.8)",
    "Accept": "text/xml, multipart/related",
    "Accept-Encoding": "gzip, deflate",
    "Cache-Control": "no-cache",
    "Pragma": "no-cache",
    "X-Request-Id": "6f1c2a1e-9d8b-4c6e-a3f2-0b9e7c5d4a31",
    "X-Correlation-Id": "order-service/checkout/3f9a",
    "X-Forwarded-For": "10.20.30.40",
    "Accept-Language": "en-US,en;q=0.9",
    "Cookie": "session=8c0f1e2d3b4a5968; region=eu-west",
}
def lua(text):
    return "[==[" + text + "]==]"
print('wrk.method = "POST"')
print(f"wrk.body = {lua(envelope)}")
for name, value in headers.items():
    # A space keeps "[ [==[" from reading as a long bracket.
    print(f"wrk.headers[ {lua(name)} ] = {lua(value)}")
PY
    echo "$path"
}

# wrk_once URL SECONDS [SCRIPT]: runs wrk on core 1 (the GET with the contract header, or the
# script's request) and prints "requests requests_per_s non2xx socket_errors".
wrk_once() {
    local out request=(-H "X-Switchboard-Contract: $CONTRACT")
    [[ -n "${3:-}" ]] && request=(-s "$3")
    out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${2}s" "${request[@]}" "$1")
    awk '
        / requests in / { requests = $1 }
        /^Requests\/sec:/ { rate = $2 }
        /Non-2xx or 3xx responses:/ { bad = $5 }
        /Socket errors:/ { gsub(",", ""); errors = $4 + $6 + $8 + $10 }
        END { printf "%d %s %d %d\n", requests, rate, bad + 0, errors + 0 }
    ' <<<"$out"
}

# b1_cell TARGET REP [SHAPE SCRIPT]: a warm-up, then one measured wrk run with the target's CPU
# time around it; a SOAP shape is reported as TARGET-SHAPE.
b1_cell() {
    local target=$1 rep=$2 shape=${3:-} script=${4:-} url pids before after started ended result requests rate bad errors
    local steal
    url=$(target_url "$target")
    read -r -a pids <<<"$(target_pids "$target")"
    wrk_once "$url" "$B1_WARMUP" "$script" >/dev/null
    before=$(cpu_ticks "${pids[@]}")
    steal=$(steal_ticks)
    started=$(date +%s.%N)
    result=$(wrk_once "$url" "$B1_SECONDS" "$script")
    ended=$(date +%s.%N)
    after=$(cpu_ticks "${pids[@]}")
    steal=$(($(steal_ticks) - steal))
    read -r requests rate bad errors <<<"$result"
    ((requests > 0)) || die "B1: no request succeeded against $target ($url)"
    ((bad + errors <= requests / 100)) || die "B1: $target answered $bad non-2xx and $errors socket errors of $requests"
    [[ -n "$shape" ]] && target="$target-$shape"
    log "B1 $target rep $rep: $rate req/s, cpu ticks $((after - before))"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$rep" "$requests" "$rate" "$bad" "$errors" \
        "$((after - before))" "$CLK_TCK" "$(awk "BEGIN { print $ended - $started }")" "$steal"
}

run_b1() {
    local rep target cells="$BENCH_RUN/b1-cells.tsv" by_action by_body wsa general_get general_soap
    : >"$cells"
    by_action=$(soap_script "$CONTRACT/Echo" soapaction)
    by_body=$(soap_script "" body)
    wsa=$(soap_script "$CONTRACT/Echo" wsa)
    general_get=$(soap_script "${CONTRACT##*/}" get-general)
    general_soap=$(soap_script "$CONTRACT/Echo" general)
    # Interleave targets within each repetition so slow drift in the machine hits all alike.
    for rep in $(seq "$B1_REPS"); do
        for target in "${TARGETS[@]}"; do b1_cell "$target" "$rep" >>"$cells"; done
        b1_cell switchboard-general "$rep" "" "$general_get" >>"$cells"
        for target in direct nginx haproxy; do b1_cell "$target" "$rep" soap "$by_action" >>"$cells"; done
        b1_cell switchboard "$rep" soapaction "$by_action" >>"$cells"
        b1_cell switchboard-general "$rep" soapaction "$general_soap" >>"$cells"
        b1_cell switchboard "$rep" body "$by_body" >>"$cells"
        for target in direct nginx switchboard; do b1_cell "$target" "$rep" wsa "$wsa" >>"$cells"; done
    done
    python3 "$BENCH_ROOT/lib/stats.py" b1 "$cells" --connections "$CONNECTIONS" \
        --seconds "$B1_SECONDS" --reps "$B1_REPS" --cpus "$(nproc)" >"$BENCH_OUT/b1.json"
}

# --- B2 ----------------------------------------------------------------------------------------

# latency_once URL RATE SECONDS [HEADER]: open-loop latency summary as JSON (oha, or benchkit's
# fallback); HEADER is one more request header.
latency_once() {
    local url=$1 rate=$2 seconds=$3 oha_headers=(-H "X-Switchboard-Contract: $CONTRACT")
    local kit_headers=(--header "X-Switchboard-Contract: $CONTRACT")
    if [[ -n "${4:-}" ]]; then
        oha_headers+=(-H "$4")
        kit_headers+=(--header "$4")
    fi
    if [[ -n "${BENCH_OHA:-}" ]]; then
        taskset -c 1 "$BENCH_OHA" --no-tui --output-format json --worker-threads 1 -c "$CONNECTIONS" -q "$rate" \
            --latency-correction -z "${seconds}s" "${oha_headers[@]}" "$url" |
            python3 "$BENCH_ROOT/lib/stats.py" oha - --rate "$rate"
    else
        taskset -c 1 "$BENCH_KIT" openloop --url "$url" --rate "$rate" --seconds "$seconds" "${kit_headers[@]}"
    fi
}

run_b2() {
    local rate target rep steal header pids before runs="$BENCH_RUN/b2-runs.jsonl"
    rate=$(json_get "$BENCH_OUT/b1.json" 'int(j["b2_rate"])')
    ((rate > 0)) || die "B2: no usable rate from B1"
    # Quick mode only checks that B2 runs: its open-loop generator is the unoptimised build, which
    # at the full half-load rate falls behind and takes minutes per 4 s run.
    if is_quick && ((rate > 1000)); then rate=1000; fi
    : >"$runs"
    # Interleaved: each repetition runs every target once, and its added latency is against the
    # direct call of the same repetition. `switchboard-general` is the same node with the request
    # handed to its general (hyper) path, as in B1; the CPU time of the target's processes over
    # each run tells how busy the proxy's core was.
    for rep in $(seq "$B2_REPS"); do
        for target in "${TARGETS[@]}" switchboard-general; do
            log "B2 $target rep $rep at $rate req/s for ${B2_SECONDS}s"
            header=""
            [[ "$target" == switchboard-general ]] && header="X-Switchboard-Explain: 0"
            read -r -a pids <<<"$(target_pids "$target")"
            before=$(cpu_ticks "${pids[@]}")
            steal=$(steal_ticks)
            latency_once "$(target_url "$target")" "$rate" "$B2_SECONDS" "$header" >"$BENCH_RUN/b2-run.json"
            steal=$(($(steal_ticks) - steal))
            python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); j.update(target=sys.argv[2], rep=int(sys.argv[3]), steal_ticks=int(sys.argv[4]), cpu_ticks=int(sys.argv[5])); print(json.dumps(j))' \
                "$BENCH_RUN/b2-run.json" "$target" "$rep" "$steal" "$(($(cpu_ticks "${pids[@]}") - before))" >>"$runs"
        done
    done
    python3 "$BENCH_ROOT/lib/stats.py" b2 "$runs" --rate "$rate" --seconds "$B2_SECONDS" --reps "$B2_REPS" \
        --cpus "$(nproc)" \
        --tool "$([[ -n "${BENCH_OHA:-}" ]] && echo oha || echo benchkit-openloop)" >"$BENCH_OUT/b2.json"
}

start_proxies
check_forwarding
run_b1
run_b2
log "B1/B2 done"
