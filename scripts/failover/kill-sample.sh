#!/usr/bin/env bash
# Failover scenario: kill -9 of a sample service under load (its registrations turn critical on every router before its lease runs out), then restart it.
# Starts a fresh compose cluster, runs the workload through the load balancer, injects the fault,
# checks the history and deletes everything it created. Results: target/failover/kill-sample/.
# See scripts/failover/harness.py and docs/failover.md.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
run_scenario kill-sample
