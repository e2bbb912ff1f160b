#!/usr/bin/env bash
# The failover suite: every scenario, one after the other, each on a fresh cluster that it deletes
# afterwards; then the per-scenario table (target/failover/summary.md).
#
#   bash scripts/failover/run-all.sh                  # all thirteen scenarios
#   bash scripts/failover/run-all.sh kill-leader ...  # some of them
#   bash scripts/failover/run-all.sh --update-docs    # also write the table into docs/failover.md
#
# Bounded: each scenario gets at most SWITCHBOARD_FAILOVER_SCENARIO_TIMEOUT seconds (240), the
# whole suite SWITCHBOARD_FAILOVER_BUDGET seconds (1080, image build included). Without Docker it
# says so loudly and skips; under CI=true it fails instead.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

update_docs=()
scenarios=()
for arg in "$@"; do
    case "$arg" in
        --update-docs) update_docs=(--update-docs) ;;
        -*) echo "unknown option $arg" >&2; exit 2 ;;
        *) scenarios+=("$arg") ;;
    esac
done
if [ ${#scenarios[@]} -eq 0 ]; then
    scenarios=(kill-leader kill-follower pause-leader partition-leader-peers disconnect-node
        rolling-restart kill-all wipe-node wipe-and-kill-leader kill-leader-during-snapshot-install
        disk-full-follower pause-leader-during-membership-change kill-leader-large-state)
fi

began=$SECONDS
budget=${SWITCHBOARD_FAILOVER_BUDGET:-1080}
per_scenario=${SWITCHBOARD_FAILOVER_SCENARIO_TIMEOUT:-240}

require_docker
build_images
export SWITCHBOARD_SKIP_BUILD=1

# Whatever happens, leave no container, network or volume of the suite behind.
cleanup() {
    SWITCHBOARD_PROJECT=${SWITCHBOARD_FAILOVER_PROJECT:-sbfailover} \
        bash "$REPO/scripts/cluster.sh" compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
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

python3 -B "$FAILOVER_DIR/report.py" --duration $((SECONDS - began)) "${update_docs[@]}" "${scenarios[@]}" || true
echo "failover suite finished in $((SECONDS - began)) s"
if [ ${#failed[@]} -gt 0 ]; then
    loud "FAILOVER SUITE FAILED: ${failed[*]}" "Histories, container logs and checker results: target/failover/<scenario>/"
    exit 1
fi
echo "failover suite passed"
