#!/usr/bin/env bash
# Failover scenario: leader paused while a wiped follower is re-added.
# Starts a fresh compose cluster, runs the workload through the load balancer, injects the fault,
# checks the history and deletes everything it created. Results: target/failover/pause-leader-during-membership-change/.
# See scripts/failover/harness.py and docs/failover.md.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
run_scenario pause-leader-during-membership-change
