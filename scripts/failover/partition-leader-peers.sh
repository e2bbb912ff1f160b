#!/usr/bin/env bash
# Failover scenario: drop only the leader's peer traffic (iptables in its network namespace) while the load balancer still reaches it, then restore it.
# Starts a fresh compose cluster, runs the workload through the load balancer, injects the fault,
# checks the history and deletes everything it created. Results: target/failover/partition-leader-peers/.
# See scripts/failover/harness.py and docs/failover.md.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
run_scenario partition-leader-peers
