#!/usr/bin/env bash
# The failover suite: every scenario, one after the other, each on a fresh cluster that it deletes
# afterwards; then the per-scenario table (target/failover/summary.md).
#
#   bash scripts/failover/run-all.sh                  # all fifteen scenarios
#   bash scripts/failover/run-all.sh kill-leader ...  # some of them
#   bash scripts/failover/run-all.sh --update-docs    # also write the tables into docs/failover.md
#   bash scripts/failover/run-all.sh --preflight      # only check that the suite can run here
#
# Each scenario's checker asserts its figures against the bounds in harness.py; anything out of
# bounds fails the scenario, and a failed scenario fails the suite.
#
# Bounded: the image build gets at most SWITCHBOARD_FAILOVER_BUILD_TIMEOUT seconds (3600), each
# scenario SWITCHBOARD_FAILOVER_SCENARIO_TIMEOUT seconds (240), all scenarios together
# SWITCHBOARD_FAILOVER_BUDGET seconds (1080, counted from the end of the build). Without Docker it
# fails, saying why.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

update_docs=()
scenarios=()
for arg in "$@"; do
    case "$arg" in
        --update-docs) update_docs=(--update-docs) ;;
        --preflight) require_docker; echo "the failover suite can run here"; exit 0 ;;
        -*) echo "unknown option $arg" >&2; exit 2 ;;
        *) scenarios+=("$arg") ;;
    esac
done
if [ ${#scenarios[@]} -eq 0 ]; then
    scenarios=(kill-leader kill-follower pause-leader partition-leader-peers disconnect-node
        rolling-restart kill-all kill-two-routers wipe-node wipe-and-kill-leader kill-leader-during-snapshot-install
        disk-full-follower pause-leader-during-membership-change kill-sample kill-leader-large-state)
fi

suite_began=$SECONDS
require_docker
build_images
export SWITCHBOARD_SKIP_BUILD=1
began=$SECONDS
budget=${SWITCHBOARD_FAILOVER_BUDGET:-1080}
per_scenario=${SWITCHBOARD_FAILOVER_SCENARIO_TIMEOUT:-240}

# Whatever happens, leave no container, network or volume of the suite behind; say so if that fails.
cleanup() {
    local status=$?
    if ! SWITCHBOARD_PROJECT=${SWITCHBOARD_FAILOVER_PROJECT:-sbfailover} \
        bash "$REPO/scripts/cluster.sh" compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1; then
        loud "failover suite: deleting the compose project failed; containers may be left behind"
        status=1
    fi
    exit "$status"
}
trap cleanup EXIT

failed=()
for name in "${scenarios[@]}"; do
    left=$((budget - (SECONDS - began)))
    if [ "$left" -lt 60 ]; then
        loud "failover suite: time budget of ${budget} s used up before $name"
        failed+=("$name (not run: out of time)")
        continue
    fi
    printf '\n=== failover scenario: %s ===\n' "$name"
    if ! SWITCHBOARD_FAILOVER_SCENARIO_TIMEOUT=$((left < per_scenario ? left : per_scenario)) \
        bash "$FAILOVER_DIR/$name.sh"; then
        failed+=("$name")
    fi
done

# The report fails when a scenario did not run or did not pass; that fails the suite too.
report_status=0
python3 -B "$FAILOVER_DIR/report.py" --duration $((SECONDS - began)) "${update_docs[@]}" "${scenarios[@]}" \
    || report_status=$?
echo "failover suite finished in $((SECONDS - suite_began)) s ($((SECONDS - began)) s of scenarios)"
if [ ${#failed[@]} -gt 0 ] || [ "$report_status" -ne 0 ]; then
    loud "FAILOVER SUITE FAILED: ${failed[*]:-the report (status $report_status)}" \
        "Histories, container logs and checker results: target/failover/<scenario>/"
    exit 1
fi
echo "failover suite passed"
