#!/usr/bin/env bash
# The compose cluster: three routers behind HAProxy plus two sample services.
#
#   bash scripts/cluster.sh up        build the images (no registry needed), start everything,
#                                     wait until the load balancer routes to the samples
#   bash scripts/cluster.sh down      stop and delete the containers, networks and data volumes
#   bash scripts/cluster.sh ps|logs   what compose says
#   bash scripts/cluster.sh compose ARGS...   any compose command for this cluster
#
# Works with `docker compose` (v2) and `docker-compose` (1.29), whichever is installed.
# Environment: SWITCHBOARD_PROJECT (compose project, default "switchboard"),
# SWITCHBOARD_COMPOSE_OVERRIDE (a compose file layered over docker-compose.yml),
# SWITCHBOARD_SKIP_BUILD=1 (use the images as they are), SWITCHBOARD_CLUSTER_SECRET (default: a
# random one, created once), and the variables docker-compose.yml lists. The secret reaches the
# routers as a mounted file (--cluster-secret-file), never on a command line or in the environment.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PROJECT=${SWITCHBOARD_PROJECT:-switchboard}

die() { echo "error: $*" >&2; exit 1; }

# The compose command that works here: the v2 plugin if present, else docker-compose v1.
compose_cmd() {
    if docker compose version >/dev/null 2>&1; then
        echo "docker compose"
    elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
        echo "docker-compose"
    else
        return 1
    fi
}

compose() {
    local cmd
    cmd=$(compose_cmd) || die "neither 'docker compose' nor 'docker-compose' works here"
    # shellcheck disable=SC2086 # "docker compose" is two words on purpose
    local files=(--file "$REPO/docker-compose.yml")
    # A second file layered over the first (the failover suite binds some data directories).
    if [ -n "${SWITCHBOARD_COMPOSE_OVERRIDE:-}" ]; then
        files+=(--file "$SWITCHBOARD_COMPOSE_OVERRIDE")
    fi
    $cmd --project-name "$PROJECT" "${files[@]}" "$@"
}

# Writes the cluster secret (SWITCHBOARD_CLUSTER_SECRET, or a random one made once) to the file
# the routers read: $SWITCHBOARD_SECRETS_DIR/cluster-secret.
write_secret() {
    local file="$SWITCHBOARD_SECRETS_DIR/cluster-secret"
    if [ -n "${SWITCHBOARD_CLUSTER_SECRET:-}" ]; then
        (umask 077 && printf '%s\n' "$SWITCHBOARD_CLUSTER_SECRET" >"$file")
    elif [ ! -s "$file" ]; then
        (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$file")
    fi
    # The routers run as uid 65532 (see Dockerfile), like their keys below.
    chown 65532:65532 "$file" 2>/dev/null || chmod 644 "$file"
}

# The cluster runs secured: peer mutual TLS with a CA made for it, and API tokens. Both live in
# target/docker/secrets-<peer network> (created once, kept across runs, never committed): the
# cluster secret (cluster-secret), certs/
# (CA and one certificate per node, with the node's peer-network address), tokens.json (SHA-256
# digests only, mounted into the routers), and the tokens themselves in ops-token (admin, read,
# every namespace: for operators and the failover workload) and sample-token (register in the
# samples' namespaces).
load_security() {
    local peer=${SWITCHBOARD_NET_PEER:-172.29.11}
    local dir="$REPO/target/docker/secrets-$peer"
    mkdir -p "$dir"
    # (Re)made when missing, or when made before certificates named their node.
    if [ ! -s "$dir/certs/node3.pem" ] || ! openssl x509 -in "$dir/certs/node3.pem" -noout -text 2>/dev/null |
        grep -q 'DNS:node-3.switchboard'; then
        rm -rf "$dir/certs"
        bash "$REPO/scripts/gen-certs.sh" "$dir/certs" node1="$peer.11" node2="$peer.12" node3="$peer.13" >/dev/null
        # The CA key stays outside what the containers see.
        mv "$dir/certs/ca.key" "$dir/ca.key"
        # The routers run as uid 65532 (see Dockerfile): give them their keys, or, when this user
        # cannot change owners, make the keys readable (the directory stays private to this user).
        if ! chown 65532:65532 "$dir/certs/"node*.key 2>/dev/null; then
            chmod 644 "$dir/certs/"node*.key
        fi
    fi
    SWITCHBOARD_SECRETS_DIR=$dir
    export SWITCHBOARD_SECRETS_DIR
    write_secret
    for name in ops sample; do
        if [ ! -s "$dir/$name-token" ]; then
            (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$dir/$name-token")
        fi
    done
    local ops_digest sample_digest
    ops_digest=$(tr -d '\n' <"$dir/ops-token" | sha256sum | cut -d' ' -f1)
    sample_digest=$(tr -d '\n' <"$dir/sample-token" | sha256sum | cut -d' ' -f1)
    cat >"$dir/tokens.json" <<JSON
{"tokens": [
  {"name": "ops", "sha256": "$ops_digest", "scopes": ["admin", "read", "register:*", "broadcast:*"]},
  {"name": "samples", "sha256": "$sample_digest", "scopes": ["register:http://tempuri.org*", "register:urn:switchboard:samples*", "read"], "max_registrations": 64}
]}
JSON
    SWITCHBOARD_OPS_TOKEN=$(cat "$dir/ops-token")
    SWITCHBOARD_SAMPLE_TOKEN=$(cat "$dir/sample-token")
    export SWITCHBOARD_OPS_TOKEN SWITCHBOARD_SAMPLE_TOKEN
}

# Polls the load balancer (through its published port) until it routes a SOAP call.
wait_routable() {
    local api data deadline=$((SECONDS + ${1:-90}))
    api=$(compose port lb 8081 | tail -n1)
    data=$(compose port lb 8080 | tail -n1)
    local envelope='<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Echo xmlns="http://tempuri.org/"/></s:Body></s:Envelope>'
    while [ $SECONDS -lt $deadline ]; do
        if curl -fsS -m 2 -o /dev/null "http://$data/" -H 'content-type: text/xml; charset=utf-8' \
            -H 'SOAPAction: "http://tempuri.org/ICalculator/Echo"' --data "$envelope" 2>/dev/null; then
            echo "cluster up: data plane http://$data/  control API http://$api/"
            echo "  the API needs a token: TOKEN=\$(cat ${SWITCHBOARD_SECRETS_DIR#"$REPO/"}/ops-token)"
            echo "  try: curl -s -H \"authorization: Bearer \$TOKEN\" http://$api/v1/cluster"
            return 0
        fi
        sleep 0.5
    done
    compose ps >&2 || true
    die "the load balancer did not route a request within ${1:-90} s (see: bash scripts/cluster.sh logs)"
}

command -v docker >/dev/null 2>&1 || die "docker is not installed"
load_security
case "${1:-}" in
    up)
        if [ "${SWITCHBOARD_SKIP_BUILD:-0}" != 1 ]; then
            bash "$REPO/scripts/images.sh"
        fi
        compose up -d
        wait_routable 90
        ;;
    down)
        compose down --volumes --remove-orphans --timeout 10
        ;;
    ps)
        compose ps
        ;;
    logs)
        shift
        compose logs --no-color "$@"
        ;;
    compose)
        shift
        compose "$@"
        ;;
    *)
        echo "usage: $0 up|down|ps|logs|compose ARGS..." >&2
        exit 2
        ;;
esac
