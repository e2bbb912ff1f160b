#!/usr/bin/env bash
# The SOAP interop matrix (scripts/interop/run.py): installs the stacks it needs (PHP's ext/soap,
# SOAP::Lite and Mono's mono-devel, for WCF's System.ServiceModel and the mcs compiler, from the
# distribution; zeep and spyne from PyPI into .local/interop-venv), builds the switchboard binary,
# runs the matrix (which compiles its C# programs first) and writes docs/interop.md. The matrix's
# own verdicts (run.py's pure checks) are tested first, in a fraction of a second.
set -euo pipefail
cd "$(dirname "$0")/../.."

python3 -m unittest discover -s scripts/interop -p 'test_*.py'

need=()
command -v php >/dev/null 2>&1 && php -m 2>/dev/null | grep -qx soap || need+=(php-cli php-soap)
perl -MSOAP::Lite -e1 2>/dev/null || need+=(libsoap-lite-perl)
{ command -v mcs && command -v mono; } >/dev/null 2>&1 || need+=(mono-devel)
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing ${need[*]}"
    began=$SECONDS
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    echo "installed in $((SECONDS - began)) s"
fi

venv=.local/interop-venv
if ! "$venv/bin/python" -c 'import zeep, spyne' 2>/dev/null; then
    echo "installing zeep and spyne into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check zeep==4.3.3 spyne==2.14.0
fi

cargo build --locked --bin switchboard
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
python3 scripts/interop/run.py --bin "$target_dir/debug/switchboard" --python "$venv/bin/python" --out docs/interop.md
