#!/usr/bin/env bash
# What an allowlisted network costs, a ratio against a baseline measured in
# the same run on the same dockerd and image: one trivial action through
# dispatcher.sh --once with "network": {"allow": [...]} (its own internal
# network and gateway container, started, read back, summed up and removed)
# vs the same action with "network": "none". Rounds alternate the two.
# No target was set (issue 16); the numbers are in docs/BENCHMARKS.md.
# Usage (root): bench/gateway.sh [ROUNDS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${1:-20}

env_file=$(scripts/testbed.sh up)
# shellcheck disable=SC1090
. "$env_file"
cargo build --release --locked --quiet
image=$VAULT_TESTBED_IMAGE
gateway_image=vault-gateway:bench
scripts/gateway-image.sh target/release/vault-gateway "$gateway_image" >/dev/null
egress=vault-bench-egress

work=$(mktemp -d)
cleanup() {
    docker network rm "$egress" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
docker network rm "$egress" >/dev/null 2>&1 || true
# Internal: nothing the bench starts can leave the host.
docker network create --internal "$egress" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/ca.key" -out "$work/ca.pem" -days 2 -subj /CN=bench 2>/dev/null
git init -q --bare -b main "$work/ops.git"
git init -q -b main "$work/clone"
mkdir -p "$work/clone/vault/actions" "$work/secrets"
age-keygen -o "$work/identity.txt" 2>/dev/null
printf %s "bench-secret-value" | age -r "$(age-keygen -y "$work/identity.txt")" -o "$work/secrets/TOKEN.age"

export VAULT_BIN_DIR=$root/target/release VAULT_REPO=$work/ops.git VAULT_CACHE=$work/cache \
    VAULT_IDENTITY=$work/identity.txt VAULT_SECRETS=$work/secrets VAULT_MOUNT_ROOT=$work/mounts \
    VAULT_RUNNER_IMAGE=$image VAULT_ALLOW_IMAGES=$image VAULT_DISPATCHER_ID=bench \
    VAULT_ALLOW_EGRESS='api.bench.example:443' VAULT_EGRESS_NETWORK=$egress \
    VAULT_GATEWAY_IMAGE=$gateway_image VAULT_GATEWAY_ROOTS=$work/ca.pem

land() { # land one action $1 with network $2 (JSON)
    printf '{"id":"%s","secrets":["TOKEN"],"command":["true"],"network":%s}\n' "$1" "$2" \
        >"$work/clone/vault/actions/$1.json"
    if git --git-dir="$work/ops.git" rev-parse -q --verify main >/dev/null; then
        git -C "$work/clone" pull -q --ff-only "$work/ops.git" main
    fi
    git -C "$work/clone" add -A
    git -C "$work/clone" -c user.name=b -c user.email=b@example.invalid commit -qm "approve $1"
    git -C "$work/clone" push -q "$work/ops.git" main
}
status() {
    git --git-dir="$work/ops.git" show "main:vault/actions/$1.result.json" |
        sed -n 's/^  "status": "\(.*\)",$/\1/p'
}
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
allow='{"allow":["api.bench.example:443"],"inject":{"TOKEN":{"host":"api.bench.example","header":"Authorization","format":"Bearer {}"}}}'

# Warm both paths once.
land warm-none '"none"'; sh dispatcher.sh --once 2>/dev/null
land warm-gw "$allow"; sh dispatcher.sh --once 2>/dev/null
for id in warm-none warm-gw; do
    [ "$(status "$id")" = succeeded ] || { echo "bench: $id did not succeed" >&2; exit 1; }
done

: >"$work/rounds"
for r in $(seq 1 "$rounds"); do
    land "none$r" '"none"'
    t0=$(now); sh dispatcher.sh --once 2>/dev/null; t1=$(now)
    land "gw$r" "$allow"
    t2=$(now); sh dispatcher.sh --once 2>/dev/null; t3=$(now)
    [ "$(status "gw$r")" = succeeded ] || { echo "bench: gw$r did not succeed" >&2; exit 1; }
    printf '%s %s\n' "$(calc "$t1 - $t0")" "$(calc "$t3 - $t2")" >>"$work/rounds"
done
none_med=$(cut -d' ' -f1 "$work/rounds" | median)
gw_med=$(cut -d' ' -f2 "$work/rounds" | median)
printf 'one action (%d rounds): network none median %.3f s; allowlist + gateway median %.3f s\n' \
    "$rounds" "$none_med" "$gw_med"
printf 'ratio of medians %.2f (gateway cost %.0f ms per action)\n' \
    "$(calc "$gw_med / $none_med")" "$(calc "($gw_med - $none_med) * 1000")"
left=$(docker ps -aq --filter label=vault.gateway | wc -l)
echo "gateway containers left: $left"
