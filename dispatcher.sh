#!/bin/sh
# dispatcher.sh: run every approved action of the ops repo once.
#
#   dispatcher.sh --once   one scan-and-dispatch cycle (cron, tests)
#   dispatcher.sh          a cycle every $VAULT_INTERVAL seconds (default 30)
#
# Configuration is the tools' environment (VAULT_REPO, VAULT_IDENTITY, ...);
# VAULT_BIN_DIR names the folder of the tools when they are not on PATH.
# Exit (--once): 0 every pending action got a recorded result, 4 retry later
# (remote unreachable, result spooled, another copy holds the lock), 6 the
# watched branch was rewritten (nothing dispatched until an operator runs
# vault-scan --accept-rewrite <new tip>), else a tool's own code (1 failure,
# 2 usage, 3 result-write kept a different final result).
set -eu

me=dispatcher.sh
say() { printf '%s: %s\n' "$me" "$*" >&2; }

once=0
case "${1:-}" in
--once) once=1 ;;
'') ;;
-h | --help)
    sed -n '2,13s/^# \{0,1\}//p' "$0"
    exit 0
    ;;
*)
    say "unknown argument: $1 (usage: dispatcher.sh [--once])"
    exit 2
    ;;
esac

bin=${VAULT_BIN_DIR:+$VAULT_BIN_DIR/}
cache=${VAULT_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/vault-dispatch}
export VAULT_CACHE="$cache"
work=$cache/dispatch
mkdir -p "$work"

# One copy per cache: the lock file is never unlinked, so every copy locks
# the same inode.
exec 9>>"$cache/dispatcher.lock"
if ! flock -n 9; then
    [ "$once" = 1 ] && { say "another dispatcher holds $cache/dispatcher.lock"; exit 4; }
    say "waiting for $cache/dispatcher.lock"
    flock 9
fi

# rm_recorded FILE: remove the containers of the results result-write
# reports as recorded (its stdout: one {"id":...} line per result).
rm_recorded() {
    sed -n 's/^{"id":"\([A-Za-z0-9._-]*\)".*/\1/p' "$1" | while IFS= read -r id; do
        "${bin}run-action" rm "$id" || say "could not remove the container of $id"
    done
}

# dispatch LINE N: claim, run with its secrets mounted, record, clean up.
# Returns 0 once a final result is recorded (or someone else holds the claim).
dispatch() {
    line=$1
    tag=$work/$$.$2
    rc=0
    printf '%s\n' "$line" | "${bin}result-write" --claim >/dev/null || rc=$?
    case $rc in
    0) ;;
    3) return 0 ;; # another dispatcher claimed it first: theirs to run
    *) return "$rc" ;;
    esac
    # secret-mount and run-action print a result line whatever the outcome
    # (exit 0 succeeded, 5 any other status); no line means nothing to record.
    printf '%s\n' "$line" | "${bin}secret-mount" -- "${bin}run-action" >"$tag.result" || :
    if [ ! -s "$tag.result" ]; then
        rm -f "$tag.result"
        return 1
    fi
    rc=0
    "${bin}result-write" <"$tag.result" >"$tag.recorded" || rc=$?
    # Only a durably recorded result frees its container.
    rm_recorded "$tag.recorded"
    rm -f "$tag.result" "$tag.recorded"
    return "$rc"
}

cycle() {
    status=0
    "${bin}secret-mount" sweep || true
    # Results spooled while the remote was down go first; their containers
    # can go once they land.
    "${bin}result-write" --flush >"$work/flushed" || status=$?
    rm_recorded "$work/flushed"
    "${bin}vault-scan" >"$work/scan" || return $?
    n=0
    parallel=${VAULT_PARALLEL:-1}
    while IFS= read -r line; do
        n=$((n + 1))
        if [ "$parallel" -gt 1 ]; then
            { dispatch "$line" "$n" || echo "$?" >"$work/$$.$n.failed"; } &
            [ $((n % parallel)) -eq 0 ] && wait
        else
            dispatch "$line" "$n" || status=$?
        fi
    done <"$work/scan"
    wait
    for f in "$work/$$".*.failed; do
        [ -e "$f" ] || continue
        status=$(cat "$f")
        rm -f "$f"
    done
    return "$status"
}

if [ "$once" = 1 ]; then
    cycle
    exit $?
fi
while :; do
    cycle || say "cycle ended with status $? (continuing)"
    sleep "${VAULT_INTERVAL:-30}"
done
