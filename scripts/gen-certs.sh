#!/usr/bin/env bash
# Generates a test certificate authority and one certificate per node for peer mutual TLS (and
# an edge certificate for HTTPS on the data plane and control API), with openssl.
#
#   scripts/gen-certs.sh <out-dir> <node-name>[=<ip>[,<ip>...]]...
#
# Each node certificate carries its name, localhost, 127.0.0.1 and the listed IPs as subject
# alternative names, and is valid for both server and client authentication. A name node<N> also
# gets node-<N>.switchboard, the name by which a peer certificate says it belongs to node N
# (Switchboard refuses a peer request whose certificate does not name its sender). A CA already in
# <out-dir> is reused. Keys are ECDSA P-256. These are test
# credentials: keep real ones in a secret store and rotate them.
set -euo pipefail

if [ "$#" -lt 2 ]; then
  echo "usage: $0 <out-dir> <node-name>..." >&2
  exit 64
fi
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
out=$1
shift
mkdir -p "$out"
cd "$out"

if [ ! -f ca.pem ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -sha256 -days 825 -subj "/CN=switchboard test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem 2>/dev/null
fi

for spec in "$@"; do
  name=${spec%%=*}
  ips=""
  if [ "$spec" != "$name" ]; then
    for ip in $(echo "${spec#*=}" | tr ',' ' '); do ips="$ips,IP:$ip"; done
  fi
  node_dns=""
  if [[ "$name" =~ ^node([0-9]+)$ ]]; then node_dns=",DNS:node-${BASH_REMATCH[1]}.switchboard"; fi
  openssl ecparam -name prime256v1 -genkey -noout -out "$name.key.ec" 2>/dev/null
  # PKCS#8, which every TLS stack reads.
  openssl pkcs8 -topk8 -nocrypt -in "$name.key.ec" -out "$name.key"
  rm -f "$name.key.ec"
  openssl req -new -key "$name.key" -subj "/CN=$name" -out "$name.csr" 2>/dev/null
  cat > "$name.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$name$node_dns,DNS:localhost,IP:127.0.0.1$ips
EXT
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -sha256 \
    -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
  chmod 600 "$name.key"
done
rm -f ca.srl
echo "certificates in $out (CA: $out/ca.pem)"
