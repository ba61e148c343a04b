#!/usr/bin/env bash
# The project's test command (README.md): starts the real testbed, then runs
# every check CI runs. Needs root (it installs packages and starts dockerd).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 1
fi

env_file=$(scripts/testbed.sh up)
# shellcheck disable=SC1090
. "$env_file"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
shellcheck scripts/*.sh dispatcher.sh bench/*.sh deploy/runner/*.sh .ci/run
cargo build --workspace --locked
# The deployment tests: the compose test's edge image copies the release
# binaries and is built on a debootstrapped debian:bookworm-slim (cached in
# /var/cache/vault-ci); the rootless test runs the pipeline as an
# unprivileged user against rootless Podman.
cargo build --release --locked
scripts/base-image.sh
# A Podman service left running from an earlier session can stop answering
# attach requests (409 "preparing container for attach"): start a fresh one.
scripts/rootless.sh down >/dev/null 2>&1 || true
scripts/rootless.sh up >/dev/null
VAULT_BIN_DIR=$PWD/target/debug cargo test --workspace --locked -- --test-threads="${VAULT_TEST_THREADS:-4}"
# A test must not dirty the tree.
git diff --exit-code --stat
