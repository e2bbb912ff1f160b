#!/usr/bin/env bash
# Builds the container images of the compose cluster without pulling anything:
#
#   switchboard:local     FROM scratch + the statically linked switchboard binary (routers and
#                         sample services run the same image with different commands)
#   switchboard-lb:local  FROM scratch + Debian's haproxy binary, the shared libraries ldd lists
#                         for it, the dynamic loader and docker/haproxy/haproxy.cfg
#
# Works on a machine that can reach no container registry (classic builder, FROM scratch only).
# Needs cargo, docker, and haproxy on the host (installed with apt-get when missing and possible).
# Image names can be changed with SWITCHBOARD_IMAGE and SWITCHBOARD_LB_IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo rustc docker python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is needed to build the images" >&2; exit 1; }
done

ROUTER_IMAGE=${SWITCHBOARD_IMAGE:-switchboard:local}
LB_IMAGE=${SWITCHBOARD_LB_IMAGE:-switchboard-lb:local}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
STAGE=target/docker

step() { printf '==> %s\n' "$*"; }

# The classic builder (no registry, no BuildKit front end); its output only when it fails.
build() {
    local out
    if ! out=$(DOCKER_BUILDKIT=0 docker build "$@" 2>&1); then
        printf '%s\n' "$out" >&2
        return 1
    fi
}

step "static switchboard binary ($TRIPLE, crt-static)"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --target "$TRIPLE" --bin switchboard
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
binary="$target_dir/$TRIPLE/release/switchboard"
case "$(ldd "$binary" 2>&1 || true)" in
    *"statically linked"* | *"not a dynamic executable"*) ;;
    *) echo "error: $binary is dynamically linked; a FROM scratch image needs a static binary" >&2; exit 1 ;;
esac

# The router build context holds only what the image needs (see .dockerignore).
rm -rf "$STAGE/router"
mkdir -p "$STAGE/router/usr/local/bin" "$STAGE/router/data"
cp "$binary" "$STAGE/router/usr/local/bin/switchboard"

step "router image $ROUTER_IMAGE"
build -f Dockerfile -t "$ROUTER_IMAGE" .

step "load balancer root file system (haproxy from the host's Debian package)"
if ! command -v haproxy >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y --no-install-recommends haproxy >/dev/null
    else
        echo "error: haproxy is not installed; install Debian's haproxy package (apt-get install haproxy)" >&2
        exit 1
    fi
fi
haproxy_bin=$(command -v haproxy)
root="$STAGE/haproxy/rootfs"
rm -rf "$STAGE/haproxy"
mkdir -p "$root/usr/sbin" "$root/etc/haproxy" "$root/tmp"
cp -L "$haproxy_bin" "$root/usr/sbin/haproxy"
# Every library ldd resolves, plus the loader, at the same paths as on the host.
ldd "$haproxy_bin" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp docker/haproxy/haproxy.cfg "$root/etc/haproxy/haproxy.cfg"
chmod 1777 "$root/tmp"

step "load balancer image $LB_IMAGE"
build -f docker/haproxy/Dockerfile -t "$LB_IMAGE" "$STAGE/haproxy"
# The configuration must parse inside the image itself (nothing but the copied files there).
docker run --rm --network none -e SWITCHBOARD_NET_FRONT=172.29.10 "$LB_IMAGE" -c -q -f /etc/haproxy/haproxy.cfg

docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^(${ROUTER_IMAGE}|${LB_IMAGE})  " || true
