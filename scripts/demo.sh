#!/usr/bin/env bash
# The demo: on a fresh Debian machine, as root (no sudo needed, none is
# called), install what is needed, build the tools, make a demo ops repo with
# one approved action and one secret, run one dispatch, and show the result
# file the dispatcher recorded. Needs a Rust toolchain (rustup; README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
demo=${VAULT_DEMO_DIR:-/tmp/vault-demo}
target=${CARGO_TARGET_DIR:-$root/target}

say() { printf '\n== %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "demo.sh: run it as root (it installs packages and starts dockerd): as root, scripts/demo.sh" >&2
    exit 1
fi
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null; then
    echo "demo.sh: cargo not found: install Rust first (README.md, \"Run it\"): curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" >&2
    exit 1
fi

say "testbed: packages, dockerd, runner image"
env_file=$(scripts/testbed.sh up)
# shellcheck disable=SC1090
. "$env_file"

say "building the tools (release)"
# libgit2 is compiled from source: a C compiler and the C library headers.
if ! command -v cc >/dev/null || [ ! -e /usr/include/stdio.h ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential >/dev/null
fi
cargo build --release --locked --quiet

say "demo ops repo, identity and secret store in $demo"
rm -rf "$demo"
mkdir -p "$demo/secrets" "$demo/work"
git init -q --bare -b main "$demo/ops.git"
age-keygen -o "$demo/identity.txt" 2>/dev/null
recipient=$(age-keygen -y "$demo/identity.txt")
printf %s "demo-token-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" |
    age -r "$recipient" -o "$demo/secrets/DEMO_TOKEN.age"

say "an agent proposes an action; a human merges it (landed = approved)"
cd "$demo/work"
git init -q -b main
mkdir -p vault/actions
cat >vault/actions/hello-1.json <<'EOF'
{
  "id": "hello-1",
  "secrets": ["DEMO_TOKEN"],
  "command": ["sh", "-c", "echo hello from $(id -u); echo token bytes: $(wc -c </run/secrets/DEMO_TOKEN); echo the token itself: $(cat /run/secrets/DEMO_TOKEN)"],
  "timeout_s": 60,
  "proposed_by": "demo-agent"
}
EOF
git add -A
git -c user.name=human -c user.email=human@example.invalid commit -qm "approve hello-1"
git push -q "$demo/ops.git" main
cd "$root"

say "one dispatch: dispatcher.sh --once"
VAULT_BIN_DIR=$target/release \
    VAULT_REPO=$demo/ops.git \
    VAULT_CACHE=$demo/cache \
    VAULT_IDENTITY=$demo/identity.txt \
    VAULT_SECRETS=$demo/secrets \
    VAULT_MOUNT_ROOT=$demo/mounts \
    VAULT_RUNNER_IMAGE=$VAULT_TESTBED_IMAGE \
    VAULT_ALLOW_IMAGES=$VAULT_TESTBED_IMAGE \
    VAULT_DISPATCHER_ID=demo-host \
    sh dispatcher.sh --once

say "the recorded result: git show main:vault/actions/hello-1.result.json"
git --git-dir="$demo/ops.git" show main:vault/actions/hello-1.result.json
