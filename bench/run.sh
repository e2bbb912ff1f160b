#!/usr/bin/env bash
# Switchboard's benchmark suite, B1 to B7 and B10, in one command.
#
#   bash bench/run.sh            full run: writes docs/benchmarks.md and bench/results.json
#   bash bench/run.sh --quick    a few seconds per benchmark: writes bench/results-quick.json and
#                                bench/benchmarks-quick.md, never the committed figures
#   ... --only NAME[,NAME]       run some benchmarks only (dataplane, registrations, failover,
#                                propagation, footprint, health); implies not touching the committed figures
#
# It installs what is missing (wrk, nginx-light, haproxy, hyperfine from the distribution; oha
# with cargo into bench/.tools), builds Switchboard in release mode, runs every benchmark as its
# own script with its own processes (all stopped when it ends), and writes the report. The exit
# status is non-zero when a benchmark could not run; a slow figure never fails the run.
#
# Environment: BENCH_PORT_BASE (default 19000; the suite uses BASE..BASE+999 on 127.0.0.1),
# BENCH_NOTE (a sentence about the run's conditions, printed in the report), BENCH_KEEP=1 (keep
# the scratch directory).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
source bench/lib/common.sh

BENCHMARKS=(dataplane registrations failover propagation footprint health)
MODE=full
ONLY=""

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

parse_args() {
    while (($#)); do
        case $1 in
        --quick) MODE=quick ;;
        --only)
            ONLY=${2:?--only needs a list}
            shift
            ;;
        -h | --help) usage ;;
        *) usage ;;
        esac
        shift
    done
}

# --- tools -------------------------------------------------------------------------------------

# Installs the distribution packages that are missing; runs `apt-get update` only if needed.
ensure_packages() {
    local missing=() sudo=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v hyperfine >/dev/null || missing+=(hyperfine)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]})) || return 0
    ((EUID == 0)) || sudo=(sudo)
    log "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Finds oha (PATH, then bench/.tools), else builds it there (in a full run only: the build takes
# minutes, and quick mode only checks that every benchmark still runs). Without it B2 uses
# benchkit's open-loop probe (examples/benchkit.rs), and the report says so.
ensure_oha() {
    BENCH_OHA=$(command -v oha || true)
    [[ -n "$BENCH_OHA" ]] && return 0
    if is_quick && [[ ! -x bench/.tools/bin/oha ]]; then
        log "quick mode: oha is not built; B2 uses benchkit openloop"
        return 0
    fi
    if [[ ! -x bench/.tools/bin/oha ]]; then
        log "building oha into bench/.tools (once; takes a few minutes)"
        cargo install oha --locked --root bench/.tools >&2 || log "oha did not build; B2 uses benchkit openloop"
    fi
    [[ -x bench/.tools/bin/oha ]] && BENCH_OHA="$PWD/bench/.tools/bin/oha"
    return 0
}

# Builds the router and the load generators, and copies them into the run directory so that a
# rebuild during the run changes nothing.
# The binary is built exactly as the router image's (statically linked, scripts/images.sh), so
# the figures are those of the shipped binary and a run after the failover suite reuses its build.
# Quick mode checks that every benchmark still runs, not how fast: its load generators are built
# in the dev profile (reusing the test build) rather than with the release profile's whole-program
# optimisation, which takes minutes per binary on a small machine. The router is the release
# binary in both modes.
build() {
    local target_dir triple release examples
    triple=$(rustc -vV | sed -n 's/^host: //p')
    target_dir=$(cargo metadata --format-version 1 --no-deps | json_get - 'j["target_directory"]')
    release="$target_dir/$triple/release"
    if is_quick; then
        log "building switchboard (release, statically linked) and the load generators (dev profile: quick mode)"
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
            cargo build --release --locked --target "$triple" --bin switchboard >&2
        cargo build --locked --example regload --example benchkit >&2
        examples="$target_dir/debug/examples"
    else
        log "building switchboard and the load generators (release, statically linked)"
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
            cargo build --release --locked --target "$triple" --bin switchboard --example regload --example benchkit >&2
        examples="$release/examples"
    fi
    mkdir -p "$BENCH_RUN/bin"
    cp "$release/switchboard" "$examples/regload" "$examples/benchkit" "$BENCH_RUN/bin/"
    BENCH_BIN="$BENCH_RUN/bin/switchboard"
    BENCH_REGLOAD="$BENCH_RUN/bin/regload"
    BENCH_KIT="$BENCH_RUN/bin/benchkit"
}

# --- running -----------------------------------------------------------------------------------

selected() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }

# run_one NAME: runs bench/NAME.sh under a time limit; true when it completed.
run_one() {
    local name=$1 limit started
    limit=$(by_mode 300 2400)
    started=$SECONDS
    log "=== $name"
    local status=0
    timeout -k 15 "$limit" bash "bench/$name.sh" || status=$?
    sweep_run_processes
    if ((status == 0)); then
        log "=== $name finished in $((SECONDS - started))s"
        echo "$((SECONDS - started))" >"$BENCH_OUT/$name.seconds"
    else
        log "=== $name FAILED after $((SECONDS - started))s (status $status)"
        return 1
    fi
}

main() {
    parse_args "$@"
    local started=$SECONDS failed=() name results markdown
    BENCH_RUN=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-bench.XXXXXX")
    BENCH_OUT="$BENCH_RUN/out"
    mkdir -p "$BENCH_OUT"
    BENCH_MODE=$MODE
    export BENCH_MODE BENCH_RUN BENCH_OUT
    trap 'status=$?; sweep_run_processes; exit $status' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    ensure_packages
    ensure_oha
    build
    export BENCH_OHA BENCH_BIN BENCH_REGLOAD BENCH_KIT
    SWITCHBOARD_CLUSTER_SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    export SWITCHBOARD_CLUSTER_SECRET

    log "machine facts and the fdatasync reference"
    python3 bench/lib/machine.py --dir "$BENCH_RUN" --iterations "$(by_mode 300 2000)" >"$BENCH_OUT/machine.json"

    for name in "${BENCHMARKS[@]}"; do
        selected "$name" || continue
        run_one "$name" || failed+=("$name")
    done

    if [[ "$MODE" == full && -z "$ONLY" ]]; then
        results=bench/results.json markdown=docs/benchmarks.md
    else
        results=bench/results-quick.json markdown=bench/benchmarks-quick.md
    fi
    python3 bench/report.py --out "$BENCH_OUT" --mode "$MODE" --results "$results" --markdown "$markdown" \
        --failed "${failed[*]:-}" --note "${BENCH_NOTE:-}" --seconds "$((SECONDS - started))"
    log "wrote $results and $markdown in $((SECONDS - started))s"

    if ((${#failed[@]})); then
        log "benchmarks that could not run: ${failed[*]} (scratch kept in $BENCH_RUN)"
        exit 1
    fi
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "scratch kept in $BENCH_RUN"; else rm -rf "$BENCH_RUN"; fi
}

main "$@"
