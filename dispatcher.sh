#!/bin/sh
# dispatcher.sh: run every approved action of the ops repo once.
#
#   dispatcher.sh --once   one scan-and-dispatch cycle (cron, tests)
#   dispatcher.sh          a cycle every $VAULT_INTERVAL seconds (default 2;
#                          SIGUSR1 starts the next one at once)
#   dispatcher.sh --help   this text, the tools it would run and its cache
#
# Configuration is the tools' environment (VAULT_REPO, VAULT_IDENTITY, ...;
# deploy/env.example lists every variable). The tools are taken from
# VAULT_BIN_DIR when set, else from PATH; a missing one stops the run before
# anything is claimed (exit 1). VAULT_CACHE defaults to
# $XDG_CACHE_HOME/vault-dispatch, else $HOME/.cache/vault-dispatch, else
# /var/cache/vault-dispatch (the tools' own default, exported to them).
# Exit (--once): 0 every pending action got a recorded result, 4 retry later
# (remote unreachable, result spooled, another copy holds the lock), 6 the
# watched branch was rewritten (nothing dispatched until an operator runs
# vault-scan --accept-rewrite <new tip>), 1 a tool is missing, else a tool's
# own code (1 failure, 2 usage, 3 result-write kept a different final result).
set -eu

me=dispatcher.sh
say() { printf '%s: %s\n' "$me" "$*" >&2; }

tools="vault-scan secret-mount run-action result-write"

# find_tool NAME: the full path of the tool that would run (VAULT_BIN_DIR,
# else PATH), or nothing.
find_tool() {
    if [ -n "${VAULT_BIN_DIR:-}" ]; then
        [ -f "$VAULT_BIN_DIR/$1" ] && [ -x "$VAULT_BIN_DIR/$1" ] || return 0
        printf '%s\n' "$VAULT_BIN_DIR/$1"
    else
        case $(command -v "$1" 2>/dev/null || :) in
        /*) command -v "$1" ;;
        esac
    fi
}

# Where the tools come from, as said by --help and the missing-tool line.
tool_source() {
    if [ -n "${VAULT_BIN_DIR:-}" ]; then
        printf 'VAULT_BIN_DIR=%s' "$VAULT_BIN_DIR"
    else
        printf 'PATH=%s' "${PATH:-}"
    fi
}

# The cache: VAULT_CACHE, else the same default as the tools'
# (vault_core::default_cache_dir): empty variables count as unset.
if [ -n "${VAULT_CACHE:-}" ]; then
    cache=$VAULT_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
    cache=$XDG_CACHE_HOME/vault-dispatch
elif [ -n "${HOME:-}" ]; then
    cache=$HOME/.cache/vault-dispatch
else
    cache=/var/cache/vault-dispatch
fi

once=0
case "${1:-}" in
--once) once=1 ;;
'') ;;
-h | --help)
    sed -n '2,20s/^# \{0,1\}//p' "$0"
    printf '\nTools, from %s:\n' "$(tool_source)"
    for t in $tools; do
        p=$(find_tool "$t")
        printf '  %-13s %s\n' "$t" "${p:-missing}"
    done
    p=$(find_tool vault-status)
    printf '  %-13s %s\n' vault-status "${p:-missing} (needed with VAULT_METRICS_FILE)"
    p=$(command -v flock 2>/dev/null || :)
    printf '  %-13s %s\n' flock "${p:-missing (util-linux)}"
    if [ -n "${VAULT_CACHE:-}" ]; then
        printf 'Cache: %s (VAULT_CACHE)\n' "$cache"
    else
        printf 'Cache: %s (default; VAULT_CACHE unset)\n' "$cache"
    fi
    exit 0
    ;;
*)
    say "unknown argument: $1 (usage: dispatcher.sh [--once | --help])"
    exit 2
    ;;
esac

# Every tool resolved once, before anything is touched: a missing one is one
# line and exit 1, with nothing swept, flushed, scanned or claimed.
missing=
for t in $tools; do
    p=$(find_tool "$t")
    if [ -z "$p" ]; then
        missing=${missing:+$missing, }$t
        continue
    fi
    case $t in
    vault-scan) vault_scan=$p ;;
    secret-mount) secret_mount=$p ;;
    run-action) run_action=$p ;;
    result-write) result_write=$p ;;
    esac
done
# vault-status only for the metrics file (stuck and pending counts).
vault_status=
if [ -n "${VAULT_METRICS_FILE:-}" ]; then
    vault_status=$(find_tool vault-status)
    [ -n "$vault_status" ] || missing=${missing:+$missing, }vault-status
fi
command -v flock >/dev/null 2>&1 || missing=${missing:+$missing, }flock
if [ -n "$missing" ]; then
    say "cannot run: not found: $missing (looked in $(tool_source); put the tools in a folder of PATH, e.g. /usr/local/bin, or set VAULT_BIN_DIR; flock is in util-linux)"
    exit 1
fi

case ${VAULT_ARCHIVE_EVERY_S:-3600} in
'' | *[!0-9]*)
    say "VAULT_ARCHIVE_EVERY_S must be a whole number of seconds, not ${VAULT_ARCHIVE_EVERY_S}"
    exit 2
    ;;
esac

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
        "$run_action" rm "$id" || say "could not remove the container of $id"
    done
}

# dispatch LINE N: claim, run with its secrets mounted, record, clean up.
# Returns 0 once a final result is recorded (or someone else holds the claim).
dispatch() {
    line=$1
    tag=$work/$$.$2
    rc=0
    # Claimed by the cycle's batch already (result-write printed it) and
    # among the first VAULT_PARALLEL lines, which start at once: no second
    # claim. Otherwise (not claimed there, an error line, or a line that
    # waited in the queue) claim it again: our own claim still there is
    # "already" (no push); someone else's claim, or a result (an operator
    # may have settled a queued claim with result-write --abandon), is exit 3
    # and it does not start.
    id=$(printf '%s\n' "$line" | sed -n 's/^{"schema":[0-9]*,"id":"\([A-Za-z0-9._-]*\)".*/\1/p')
    if [ -z "$id" ] || [ "$2" -gt "$parallel" ] ||
        ! grep -qF "{\"id\":\"$id\",\"status\":\"running\"" "$work/$$.claimed"; then
        printf '%s\n' "$line" | "$result_write" --claim >/dev/null || rc=$?
    fi
    case $rc in
    0) ;;
    3) # another dispatcher claimed it first: theirs to run
        echo race >>"$work/$$.events"
        return 0
        ;;
    *) return "$rc" ;;
    esac
    # secret-mount and run-action print a result line whatever the outcome
    # (exit 0 succeeded, 5 any other status); no line means nothing to record.
    printf '%s\n' "$line" | "$secret_mount" -- "$run_action" >"$tag.result" || :
    if [ ! -s "$tag.result" ]; then
        rm -f "$tag.result"
        return 1
    fi
    rc=0
    "$result_write" <"$tag.result" >"$tag.recorded" || rc=$?
    # For the metrics: this action's recorded status and run time (another
    # worker's result that this call delivered is counted by that worker).
    if grep -q "^{\"id\":\"$id\"," "$tag.recorded"; then
        st=$(sed -n 's/.*"status":"\([a-z_]*\)".*/\1/p' "$tag.result" | head -n 1)
        ms=$(sed -n 's/.*"duration_ms":\([0-9]*\).*/\1/p' "$tag.result" | head -n 1)
        echo "final ${st:-unknown} ${ms:--}" >>"$work/$$.events"
    fi
    # Only a durably recorded result frees its container.
    rm_recorded "$tag.recorded"
    rm -f "$tag.result" "$tag.recorded"
    return "$rc"
}

# archive_due: whether VAULT_ARCHIVE_EVERY_S (3600) seconds passed since the
# last `result-write --archive` from this cache.
archive_due() {
    last=$(cat "$work/archived-at" 2>/dev/null || :)
    case $last in '' | *[!0-9]*) last=0 ;; esac
    [ $(($(date +%s) - last)) -ge "${VAULT_ARCHIVE_EVERY_S:-3600}" ]
}

cycle() {
    status=0
    "$secret_mount" sweep || true
    # Results spooled while the remote was down go first; their containers
    # can go once they land.
    "$result_write" --flush >"$work/flushed" || status=$?
    rm_recorded "$work/flushed"
    sed -n 's/.*"status":"\([a-z_]*\)".*/final \1 -/p' "$work/flushed" >>"$work/$$.events"
    # Finished actions move to the archive branch every
    # VAULT_ARCHIVE_EVERY_S seconds (a failure waits for the next turn).
    if archive_due; then
        date +%s >"$work/archived-at"
        if "$result_write" --archive >"$work/archived"; then
            # More than one call's cap was due: the next cycle goes on.
            ! grep -q '"more":true' "$work/archived" || rm -f "$work/archived-at"
        else
            say "archiving stopped with status $? (next try in ${VAULT_ARCHIVE_EVERY_S:-3600} s)"
        fi
    fi
    "$vault_scan" >"$work/scan" || return $?
    [ -s "$work/scan" ] || return "$status"
    # Every claim of the scan in one push; result-write prints each one it
    # holds. A line it did not claim is claimed again by its dispatch (3:
    # someone else's, skipped). Unreachable: nothing is claimed, retry later.
    rc=0
    "$result_write" --claim <"$work/scan" >"$work/$$.claimed" || rc=$?
    [ "$rc" = 4 ] && { rm -f "$work/$$.claimed"; return 4; }
    parallel=${VAULT_PARALLEL:-1}
    if [ "$parallel" -gt 1 ]; then
        pool "$parallel" <"$work/scan"
    else
        n=0
        while IFS= read -r line; do
            n=$((n + 1))
            dispatch "$line" "$n" || status=$?
        done <"$work/scan"
    fi
    for f in "$work/$$".*.failed; do
        [ -e "$f" ] || continue
        status=$(cat "$f")
        rm -f "$f"
    done
    rm -f "$work/$$.claimed"
    return "$status"
}

# pool N: dispatch the lines of stdin, N at a time: the next one starts as
# soon as one ends (a token per free slot in a pipe; a dispatch takes one to
# start and gives it back when it ends).
pool() {
    fifo=$work/$$.pool
    rm -f "$fifo"
    mkfifo "$fifo"
    exec 8<>"$fifo"
    rm -f "$fifo"
    i=0
    while [ "$i" -lt "$1" ]; do
        echo >&8
        i=$((i + 1))
    done
    n=0
    while IFS= read -r line; do
        n=$((n + 1))
        read -r _ <&8
        {
            dispatch "$line" "$n" || echo "$?" >"$work/$$.$n.failed"
            echo >&8
        } &
    done
    wait
    exec 8>&-
}

# metrics STATUS START: after a cycle that ended with STATUS and began at
# START (nanoseconds), fold its events into the counters kept in
# $work/metrics.state and replace VAULT_METRICS_FILE (Prometheus text format,
# node_exporter's textfile collector) at once (rename). Off when unset.
metrics() {
    rm_events=$work/$$.events
    if [ -z "${VAULT_METRICS_FILE:-}" ]; then
        rm -f "$rm_events"
        return 0
    fi
    end=$(now_ns)
    # The pending and stuck gauges are left out when vault-status fails (an
    # absent series can be alerted on; a 0 would hide the trouble).
    pending=- stuck=-
    if "$vault_status" --cached --json --status pending,stuck >"$work/status" 2>"$work/status.err"; then
        pending=$(grep -c '"status":"pending"' "$work/status" || :)
        stuck=$(grep -c '"status":"stuck"' "$work/status" || :)
    else
        say "metrics: vault-status failed, pending and stuck left out: $(head -n 1 "$work/status.err")"
    fi
    spool=$(find "$cache/spool" -mindepth 2 -maxdepth 2 -type f -name '*.json' 2>/dev/null | wc -l)
    touch "$work/metrics.state" "$rm_events"
    if awk -v status="$1" -v start="$2" -v end="$end" -v pending="$pending" \
        -v stuck="$stuck" -v spool="$spool" -v state="$work/metrics.state.new" '
        FILENAME == ARGV[1] { v[$1] = $2; next }
        $1 == "race" { v["races"]++ }
        $1 == "final" {
            v["final_" $2]++
            if ($3 != "-") {
                s = $3 / 1000; v["dur_sum"] += s; v["dur_count"]++
                for (i = 1; i <= nb; i++) if (s <= b[i]) v["dur_le_" b[i]]++
            }
        }
        BEGIN { nb = split("1 5 30 120 600 3600", b, " ") }
        END {
            v[status == 0 ? "cycles_ok" : "cycles_failed"]++
            if (status == 0) v["last_success"] = int(end / 1e9)
            # %.17g keeps a double exactly (print would round to 6 digits)
            for (k in v) printf "%s %.17g\n", k, v[k] > state
            n = split("succeeded failed timed_out rejected error abandoned", st, " ")
            p = "vault_dispatch_"
            print "# HELP " p "last_success_timestamp_seconds When a cycle last ended with status 0 (alert when it is old)."
            print "# TYPE " p "last_success_timestamp_seconds gauge"
            printf "%slast_success_timestamp_seconds %.0f\n", p, v["last_success"]
            print "# HELP " p "cycle_duration_seconds How long the last cycle took."
            print "# TYPE " p "cycle_duration_seconds gauge"
            printf "%s %.3f\n", p "cycle_duration_seconds", (end - start) / 1e9
            print "# HELP " p "cycles_total Cycles run, by outcome."
            print "# TYPE " p "cycles_total counter"
            printf "%scycles_total{outcome=\"ok\"} %.0f\n", p, v["cycles_ok"]
            printf "%scycles_total{outcome=\"failed\"} %.0f\n", p, v["cycles_failed"]
            print "# HELP " p "actions_total Results recorded, by final status."
            print "# TYPE " p "actions_total counter"
            for (i = 1; i <= n; i++) printf "%sactions_total{status=\"%s\"} %.0f\n", p, st[i], v["final_" st[i]]
            print "# HELP " p "action_duration_seconds Run time of the actions whose result this dispatcher recorded."
            print "# TYPE " p "action_duration_seconds histogram"
            for (i = 1; i <= nb; i++) printf "%saction_duration_seconds_bucket{le=\"%s\"} %.0f\n", p, b[i], v["dur_le_" b[i]]
            printf "%saction_duration_seconds_bucket{le=\"+Inf\"} %.0f\n", p, v["dur_count"]
            printf "%s %.3f\n", p "action_duration_seconds_sum", v["dur_sum"] + 0
            printf "%saction_duration_seconds_count %.0f\n", p, v["dur_count"]
            if (pending != "-") {
                print "# HELP " p "pending_actions Actions landed and not yet claimed, after the last cycle."
                print "# TYPE " p "pending_actions gauge"
                print p "pending_actions " pending
                print "# HELP " p "stuck_actions Claims past their timeout, grace and margin (see vault-status)."
                print "# TYPE " p "stuck_actions gauge"
                print p "stuck_actions " stuck
            }
            print "# HELP " p "spool_results Final results waiting in the spool for the remote."
            print "# TYPE " p "spool_results gauge"
            print p "spool_results " spool
            print "# HELP " p "claim_races_lost_total Claims another dispatcher made first."
            print "# TYPE " p "claim_races_lost_total counter"
            printf "%sclaim_races_lost_total %.0f\n", p, v["races"]
        }' "$work/metrics.state" "$rm_events" >"$VAULT_METRICS_FILE.tmp.$$"; then
        mv "$work/metrics.state.new" "$work/metrics.state"
        mv "$VAULT_METRICS_FILE.tmp.$$" "$VAULT_METRICS_FILE"
    else
        say "cannot write the metrics file $VAULT_METRICS_FILE"
    fi
    rm -f "$rm_events" "$VAULT_METRICS_FILE.tmp.$$" "$work/status" "$work/status.err"
}

# now_ns: nanoseconds since the epoch (whole seconds where date has no %N).
now_ns() {
    t=$(date +%s%N)
    case $t in *[!0-9]*) t=$(($(date +%s) * 1000000000)) ;; esac
    echo "$t"
}

if [ "$once" = 1 ]; then
    cycle_start=$(now_ns)
    cycle_rc=0
    cycle || cycle_rc=$?
    metrics "$cycle_rc" "$cycle_start" || say "metrics: not written (status $?)"
    exit "$cycle_rc"
fi
# SIGUSR1 starts the next cycle at once (e.g. from a webhook receiver:
# `systemctl kill --kill-whom=main -s USR1 vault-dispatch`: to this shell
# only, not to the tools); a cycle under way finishes first.
woken=0
trap 'woken=1' USR1
while :; do
    woken=0
    cycle_start=$(now_ns)
    cycle_rc=0
    cycle || cycle_rc=$?
    [ "$cycle_rc" = 0 ] || say "cycle ended with status $cycle_rc (continuing)"
    metrics "$cycle_rc" "$cycle_start" || say "metrics: not written (status $?)"
    # A wake during the cycle is not lost: no sleep then.
    [ "$woken" = 1 ] && continue
    sleep "${VAULT_INTERVAL:-2}" &
    wait $! || kill $! 2>/dev/null || :
done
