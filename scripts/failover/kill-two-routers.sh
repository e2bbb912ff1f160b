#!/usr/bin/env bash
# Failover scenario: kill -9 of a follower and then the leader under load; the survivor keeps
# routing alone for 8 s while every write is refused; then both start again.
# Starts a fresh compose cluster, runs the workload through the load balancer, injects the fault,
# checks the history and deletes everything it created. Results: target/failover/kill-two-routers/.
# See scripts/failover/harness.py and docs/failover.md.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
run_scenario kill-two-routers
