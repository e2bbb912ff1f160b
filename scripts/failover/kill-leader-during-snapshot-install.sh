#!/usr/bin/env bash
# Failover scenario: leader killed while a wiped follower installs a snapshot.
# Starts a fresh compose cluster, runs the workload through the load balancer, injects the fault,
# checks the history and deletes everything it created. Results: target/failover/kill-leader-during-snapshot-install/.
# See scripts/failover/harness.py and docs/failover.md.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
run_scenario kill-leader-during-snapshot-install
