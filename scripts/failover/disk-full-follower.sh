#!/usr/bin/env bash
# Failover scenario: follower's disk fills up, then is freed.
# Starts a fresh compose cluster, runs the workload through the load balancer, injects the fault,
# checks the history and deletes everything it created. Results: target/failover/disk-full-follower/.
# See scripts/failover/harness.py and docs/failover.md.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
run_scenario disk-full-follower
