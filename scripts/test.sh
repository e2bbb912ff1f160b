#!/usr/bin/env bash
# Runs every test of Switchboard:
#   1. the failover history checker's own tests (synthetic histories it must pass or fail; Python,
#      a second);
#   2. formatting and lints;
#   3. cargo test: unit tests, router tests without sockets, openraft's storage conformance
#      suite, property tests, and the multi-process cluster tests (real `switchboard` processes
#      on loopback);
#   4. the SOAP interop matrix: real SOAP stacks (zeep, spyne, PHP ext/soap, SOAP::Lite) as
#      clients and services through a follower of a three-node cluster (docs/interop.md);
#   5. the failover suite: the docker-compose cluster behind HAProxy, broken on purpose in thirteen
#      ways while a workload runs, with a history checker (needs Docker; without it this step
#      says so loudly, and fails under CI=true);
#   6. the benchmark suite in quick mode (checks every benchmark still runs; asserts no speed).
# It installs what it needs from the distribution when missing (openssl for test certificates,
# strace for the durability test; the benchmark tools are installed by bench/run.sh). The
# storage tests mount small tmpfs file systems (a full disk), so it runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

need_packages=()
command -v openssl >/dev/null 2>&1 || need_packages+=(openssl)
command -v python3 >/dev/null 2>&1 || need_packages+=(python3)
command -v strace >/dev/null 2>&1 || need_packages+=(strace)
if [ "${#need_packages[@]}" -gt 0 ]; then
    step "installing ${need_packages[*]}"
    apt-get update -qq && apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

step "failover history checker tests"
python3 -m unittest discover -s scripts/failover -p 'test_*.py'

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, router, storage conformance, properties, cluster processes)"
cargo test --workspace --locked -- --test-threads 2

step "SOAP interop matrix (real SOAP stacks through a follower)"
bash scripts/interop/run.sh

step "failover suite (docker-compose cluster behind HAProxy)"
bash scripts/failover/run-all.sh

step "benchmarks, quick mode"
bash bench/run.sh --quick

step "all tests passed"
