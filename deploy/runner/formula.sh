#!/bin/sh
# Entry point of the runner image: `formula NAME ID`. The action file is at
# /run/vault/action.json, its secrets in /run/secrets/NAME.
set -eu
name=${1:?formula name}
id=${2:?action id}
case $name in
hello) echo "hello from action $id" ;;
*)
    echo "formula: unknown formula $name" >&2
    exit 64
    ;;
esac
