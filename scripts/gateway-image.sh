#!/usr/bin/env bash
# Build a gateway image (VAULT_GATEWAY_IMAGE) from a vault-gateway binary:
# the binary and the shared libraries it links, nothing else (no shell, no
# package manager), its entrypoint vault-gateway, its user nobody.
#
#   scripts/gateway-image.sh [BINARY] [TAG]
#   # default: target/release/vault-gateway, vault-gateway:local
#
# Uses `docker import` (no registry, no build context). The compose
# deployment builds its gateway image from deploy/Dockerfile.gateway instead.
set -euo pipefail

bin=${1:-target/release/vault-gateway}
tag=${2:-vault-gateway:local}

if [ ! -x "$bin" ]; then
    printf 'gateway-image: %s is not an executable (cargo build --release --locked first)\n' "$bin" >&2
    exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
install -D -m 0755 "$bin" "$root/usr/local/bin/vault-gateway"
# The libraries the binary links, at the paths the loader looks them up.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u |
    while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
mkdir -p "$root/etc" "$root/tmp"
printf 'nobody:x:65534:65534:nobody:/:/nonexistent\n' >"$root/etc/passwd"
printf 'nogroup:x:65534:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
tar -C "$root" --owner=0 --group=0 -c . |
    docker import -c 'ENTRYPOINT ["/usr/local/bin/vault-gateway"]' -c 'USER 65534:65534' - "$tag" >/dev/null
printf '%s\n' "$tag"
