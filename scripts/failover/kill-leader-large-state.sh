#!/usr/bin/env bash
# Failover scenario: leader killed with 20 MB of registrations (100 MB with SWITCHBOARD_FAILOVER_FULL=1), a follower wiped and caught up.
# Starts a fresh compose cluster, runs the workload through the load balancer, injects the fault,
# checks the history and deletes everything it created. Results: target/failover/kill-leader-large-state/.
# See scripts/failover/harness.py and docs/failover.md.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
run_scenario kill-leader-large-state
