# Shared by the failover scripts (sourced): preflight checks, the image build, one scenario run.
# shellcheck shell=bash
set -euo pipefail
FAILOVER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$FAILOVER_DIR/../.." && pwd)

loud() {
    printf '\n%s\n' "########################################################################" >&2
    printf '### %s\n' "$@" >&2
    printf '%s\n\n' "########################################################################" >&2
}

# What keeps the suite from running here (Docker, a compose tool, python3), or nothing.
docker_problem() {
    if ! command -v docker >/dev/null 2>&1; then
        echo "docker is not installed"
    elif ! docker info >/dev/null 2>&1; then
        echo "the docker daemon is not reachable (docker info fails)"
    elif ! bash "$REPO/scripts/cluster.sh" compose version >/dev/null 2>&1; then
        echo "neither 'docker compose' nor 'docker-compose' works"
    elif ! command -v python3 >/dev/null 2>&1; then
        echo "python3 is not installed"
    fi
}

# Without Docker, a compose tool and python3 the suite cannot run: that is a failure, never a
# silent skip. (The Docker-free part of the tests is asked for explicitly: scripts/test.sh
# --without-docker, which says in its summary that the failover suite was not run.)
require_docker() {
    local problem
    problem=$(docker_problem)
    [ -z "$problem" ] && return 0
    loud "FAILOVER SUITE CANNOT RUN: $problem" \
        "Nothing was tested. Install Docker and a compose tool, or run the tests without the" \
        "failover suite on purpose: bash scripts/test.sh --without-docker"
    exit 1
}

# The peer-cut scenarios drop packets inside a container's network namespace from the host.
require_iptables() {
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    if ! command -v iptables >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y --no-install-recommends iptables >/dev/null
    fi
    if ! command -v iptables >/dev/null 2>&1 || ! command -v nsenter >/dev/null 2>&1; then
        echo "error: this scenario needs iptables and nsenter on the host" >&2
        exit 1
    fi
    if ! "${sudo[@]}" true 2>/dev/null; then
        echo "error: this scenario needs root (or passwordless sudo) for nsenter" >&2
        exit 1
    fi
}

# The images, built from this checkout (bounded: SWITCHBOARD_FAILOVER_BUILD_TIMEOUT seconds, 3600).
build_images() {
    if [ "${SWITCHBOARD_SKIP_BUILD:-0}" != 1 ]; then
        timeout --signal TERM --kill-after 60 "${SWITCHBOARD_FAILOVER_BUILD_TIMEOUT:-3600}" \
            bash "$REPO/scripts/images.sh"
    fi
}

# Runs one scenario of harness.py, bounded in time; the harness cleans up on SIGTERM.
run_scenario() {
    local name=$1
    require_docker
    build_images
    if [ "$name" = partition-leader-peers ] || [ "$name" = wipe-and-kill-leader ]; then
        require_iptables
    fi
    timeout --signal TERM --kill-after 60 "${SWITCHBOARD_FAILOVER_SCENARIO_TIMEOUT:-300}" \
        python3 -B "$FAILOVER_DIR/harness.py" "$name"
}
