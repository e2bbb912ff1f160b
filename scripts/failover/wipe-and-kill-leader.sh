#!/usr/bin/env bash
# Failover scenario: follower cut off from its peers (it keeps routing), leader killed, other
# follower wiped, the cut-off follower reconnected (needs root, iptables and nsenter).
# Starts a fresh compose cluster, runs the workload through the load balancer, injects the fault,
# checks the history and deletes everything it created. Results: target/failover/wipe-and-kill-leader/.
# See scripts/failover/harness.py and docs/failover.md.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
run_scenario wipe-and-kill-leader
