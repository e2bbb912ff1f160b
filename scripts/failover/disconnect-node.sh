#!/usr/bin/env bash
# Failover scenario: disconnect the leader from every network, then reconnect it with its addresses.
# Starts a fresh compose cluster, runs the workload through the load balancer, injects the fault,
# checks the history and deletes everything it created. Results: target/failover/disconnect-node/.
# See scripts/failover/harness.py and docs/failover.md.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
run_scenario disconnect-node
