#!/usr/bin/env bash
# Runs every test of Switchboard:
#   1. the failover history checker's own tests (synthetic histories it must pass or fail; Python,
#      a second);
#   2. formatting and lints;
#   3. cargo test: unit tests, router tests without sockets, openraft's storage conformance
#      suite, property tests, and the multi-process cluster tests (real `switchboard` processes
#      on loopback);
#   4. the Prometheus expositions of a dev cluster's nodes, linted by `promtool check metrics`;
#   5. the control API against its OpenAPI document (scripts/openapi-check.sh, under a minute):
#      docs/openapi.json validated by openapi-spec-validator, then schemathesis against a live node
#      with and without a token (no 5xx, every answer as documented, 401 without a token). The
#      document itself is made from the code; cargo test fails while the committed copy is stale
#      (refresh: SWITCHBOARD_WRITE_OPENAPI=1 cargo test --lib api::openapi);
#   6. the SOAP interop matrix: real SOAP stacks (WCF on Mono, zeep, spyne, PHP ext/soap, SOAP::Lite) as
#      clients and services through a follower of a three-node cluster (docs/interop.md);
#   7. the failover suite: the docker-compose cluster behind HAProxy, broken on purpose in fifteen
#      ways while a workload runs, with a history checker that asserts every figure against the
#      scenario's bounds (needs Docker);
#   8. the benchmark suite in quick mode (checks every benchmark still runs; asserts no speed).
#
#   bash scripts/test.sh                    everything; without Docker it fails at once, saying why
#   bash scripts/test.sh --without-docker   everything but the failover suite, on purpose; the
#                                           summary names what was left out (refused under CI=true)
#
# It installs what it needs from the distribution when missing (openssl for test certificates,
# strace for the durability test, promtool from prometheus, python3-venv and iproute2 for the
# OpenAPI check; the benchmark tools are installed by bench/run.sh, the OpenAPI check's Python
# tools from PyPI into a venv). The storage tests mount small tmpfs file systems (a full disk),
# and the OpenAPI check runs a node in a network namespace of its own, so it runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

with_docker=1
for arg in "$@"; do
    case "$arg" in
        --without-docker) with_docker=0 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $arg (see: bash scripts/test.sh --help)" >&2; exit 2 ;;
    esac
done
if [ "$with_docker" = 0 ] && [ "${CI:-}" = true ]; then
    echo "error: --without-docker leaves the failover suite out; CI runs every test (CI=true)" >&2
    exit 2
fi

began=$SECONDS
step() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

# Fail before an hour of tests, not after, when the failover suite cannot run here.
if [ "$with_docker" = 1 ]; then
    bash scripts/failover/run-all.sh --preflight
fi

need_packages=()
command -v openssl >/dev/null 2>&1 || need_packages+=(openssl)
command -v python3 >/dev/null 2>&1 || need_packages+=(python3)
command -v strace >/dev/null 2>&1 || need_packages+=(strace)
command -v promtool >/dev/null 2>&1 || need_packages+=(prometheus)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_packages+=(python3-venv)
command -v ip >/dev/null 2>&1 || need_packages+=(iproute2)
if [ "${#need_packages[@]}" -gt 0 ]; then
    step "installing ${need_packages[*]}"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi

step "failover history checker tests"
python3 -m unittest discover -s scripts/failover -p 'test_*.py'

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, router, storage conformance, properties, cluster processes)"
cargo test --workspace --locked -- --test-threads 2

step "Prometheus expositions (promtool check metrics on a dev cluster)"
bash scripts/metrics-lint.sh

step "OpenAPI document and the control API against it (openapi-spec-validator, schemathesis)"
bash scripts/openapi-check.sh

step "SOAP interop matrix (real SOAP stacks through a follower)"
bash scripts/interop/run.sh

if [ "$with_docker" = 1 ]; then
    step "failover suite (docker-compose cluster behind HAProxy)"
    bash scripts/failover/run-all.sh
fi

step "benchmarks, quick mode"
bash bench/run.sh --quick

minutes="$(((SECONDS - began) / 60)) min $(((SECONDS - began) % 60)) s"
if [ "$with_docker" = 1 ]; then
    step "all tests passed in $minutes"
else
    step "the Docker-free tests passed in $minutes; NOT RUN (--without-docker): the failover suite" \
        "(scripts/failover/run-all.sh, fifteen scenarios against the compose cluster). This is not a full" \
        "test run: run bash scripts/test.sh on a Docker host for that"
fi
