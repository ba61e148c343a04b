#!/usr/bin/env bash
# Pipeline benchmarks, each a ratio against a baseline measured in the same
# run on the same dockerd and image:
#   1. one trivial action through dispatcher.sh --once (scan, claim, secret
#      mount, run, record, remove) vs a bare `docker run --rm` of the same
#      locked-down container;                                 target <= 1.15x
#   2. 100 trivial actions drained by one dispatcher.sh --once vs 100 bare
#      `docker run --rm` one after another;
#   3. where one action's time goes: the same cycle with each tool behind a
#      timing shim, mean milliseconds per tool call (the shims' own cost
#      is in these numbers, not in 1 or 2);
#   4. the 100 again with VAULT_PARALLEL=4 (a pool) vs the same 100 bare
#      runs of 2;                                             target <= 0.6x
#   5. merge-to-start latency of the dispatcher loop with default settings:
#      a commit pushed to the testbed's git daemon (loopback), until dockerd
#      reports the container started; p50 and p95 of VAULT_BENCH_LATENCY
#      (default 20) landings, each after a random 0-2 s pause.
#                                                   target p50 <= 2 s, p95 <= 5 s
# Usage (root): bench/pipeline.sh [ROUNDS]   (default 20 for 1 and 3; 2 and 4 run once)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${1:-20}
many=${VAULT_BENCH_MANY:-100}
samples=${VAULT_BENCH_LATENCY:-20}

env_file=$(scripts/testbed.sh up)
# shellcheck disable=SC1090
. "$env_file"
cargo build --release --locked --quiet
image=$VAULT_TESTBED_IMAGE

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git init -q --bare -b main "$work/ops.git"
git init -q -b main "$work/clone"
mkdir -p "$work/clone/vault/actions" "$work/secrets"
age-keygen -o "$work/identity.txt" 2>/dev/null
printf %s "bench-secret-value" | age -r "$(age-keygen -y "$work/identity.txt")" -o "$work/secrets/TOKEN.age"

export VAULT_BIN_DIR=$root/target/release VAULT_REPO=$work/ops.git VAULT_CACHE=$work/cache \
    VAULT_IDENTITY=$work/identity.txt VAULT_SECRETS=$work/secrets VAULT_MOUNT_ROOT=$work/mounts \
    VAULT_RUNNER_IMAGE=$image VAULT_ALLOW_IMAGES=$image VAULT_DISPATCHER_ID=bench

land() { # land N actions named $1-1..$1-N in one commit
    local prefix=$1 n=$2 i
    # The dispatcher pushes results in between: start from the remote tip.
    if git --git-dir="$work/ops.git" rev-parse -q --verify main >/dev/null; then
        git -C "$work/clone" pull -q --ff-only "$work/ops.git" main
    fi
    for i in $(seq 1 "$n"); do
        printf '{"id":"%s-%d","secrets":["TOKEN"],"command":["true"]}\n' "$prefix" "$i" \
            >"$work/clone/vault/actions/$prefix-$i.json"
    done
    git -C "$work/clone" add -A
    git -C "$work/clone" -c user.name=b -c user.email=b@example.invalid commit -qm "approve $prefix"
    # The loop of section 5 may push between the pull and this push: rebase
    # onto what it pushed and try again.
    local try=0
    until git -C "$work/clone" push -q "$work/ops.git" main 2>/dev/null; do
        try=$((try + 1))
        [ "$try" -lt 20 ] || { echo "land $prefix: push kept failing" >&2; return 1; }
        git -C "$work/clone" -c user.name=b -c user.email=b@example.invalid \
            pull -q --rebase "$work/ops.git" main
    done
}

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
bare_run() {
    docker run --rm --network none --user 65534:65534 --read-only --cap-drop ALL \
        --security-opt no-new-privileges --tmpfs /tmp:size=16m --log-driver none \
        --pids-limit 256 --memory 1g "$image" true
}

# Warm both paths once (image cache, first fetch).
bare_run
land warm 1
sh dispatcher.sh --once 2>/dev/null

# Rounds alternate the two, so a slow spell of the machine hits both.
: >"$work/rounds"
for r in $(seq 1 "$rounds"); do
    t0=$(now); bare_run; t1=$(now)
    land "one$r" 1
    t2=$(now); sh dispatcher.sh --once 2>/dev/null; t3=$(now)
    printf '%s %s\n' "$(calc "$t1 - $t0")" "$(calc "$t3 - $t2")" >>"$work/rounds"
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
base_mean=$(awk '{ s += $1 } END { print s / NR }' "$work/rounds")
pipe_mean=$(awk '{ s += $2 } END { print s / NR }' "$work/rounds")
base_med=$(cut -d' ' -f1 "$work/rounds" | median)
pipe_med=$(cut -d' ' -f2 "$work/rounds" | median)
printf 'one action (%d rounds): bare docker run --rm mean %.3f s median %.3f s; pipeline mean %.3f s median %.3f s\n' \
    "$rounds" "$base_mean" "$base_med" "$pipe_mean" "$pipe_med"
printf 'one action: ratio of means %.2f, ratio of medians %.2f\n' \
    "$(calc "$pipe_mean / $base_mean")" "$(calc "$pipe_med / $base_med")"

shims=$work/shims
mkdir -p "$shims"
for tool in vault-scan secret-mount run-action result-write; do
    cat >"$shims/$tool" <<EOF
#!/bin/sh
s=\$(date +%s%N)
"$root/target/release/$tool" "\$@"
rc=\$?
printf '%s\t%s\t%s\n' "$tool\${1:+ \$1}" "\$s" "\$(date +%s%N)" >>"$work/steps.log"
exit \$rc
EOF
    chmod +x "$shims/$tool"
done
for r in $(seq 1 "$rounds"); do
    land "step$r" 1
    VAULT_BIN_DIR=$shims sh dispatcher.sh --once 2>/dev/null
done
echo "one action, mean per tool call (secret-mount -- includes run-action):"
awk -F'\t' '{ ms[$1] += ($3 - $2) / 1e6; n[$1]++ }
    END { for (k in ms) printf "  %-22s %7.1f ms\n", k, ms[k] / n[k] }' "$work/steps.log" | sort

t0=$(now)
for _ in $(seq 1 "$many"); do bare_run; done
t1=$(now)
land many "$many"
t2=$(now); sh dispatcher.sh --once 2>/dev/null; t3=$(now)
many_ratio=$(calc "($t3 - $t2) / ($t1 - $t0)")
printf '%d actions: bare runs %.1f s, drained by one --once %.1f s, ratio %.2f\n' \
    "$many" "$(calc "$t1 - $t0")" "$(calc "$t3 - $t2")" "$many_ratio"

done_count=$(git --git-dir="$work/ops.git" ls-tree --name-only main vault/actions/ | grep -c '^vault/actions/many-.*\.result\.json$' || true)
echo "results recorded for the $many: $done_count"

# 4. The same burst through a pool of 4; every container started once.
# dockerd keeps only its latest events: stream them while the pool runs.
docker events --filter event=start --filter label=vault.managed=1 \
    --format '{{index .Actor.Attributes "vault.action"}}' >"$work/pool-starts" &
pool_events=$!
land pool "$many"
commits_before=$(git --git-dir="$work/ops.git" rev-list --count main)
t4=$(now); VAULT_PARALLEL=4 sh dispatcher.sh --once 2>/dev/null; t5=$(now)
commits_after=$(git --git-dir="$work/ops.git" rev-list --count main)
sleep 1
kill "$pool_events" 2>/dev/null || :
pool_ratio=$(calc "($t5 - $t4) / ($t1 - $t0)")
printf '%d actions, VAULT_PARALLEL=4: drained by one --once %.1f s, ratio to the bare runs %.2f (target <= 0.6)\n' \
    "$many" "$(calc "$t5 - $t4")" "$pool_ratio"
subjects=$(git --git-dir="$work/ops.git" log --format=%s "main~$((commits_after - commits_before))..main")
# Without result batching: one commit for the batch of claims plus one per
# result, $many + 1.
printf 'commits for the pool run: %d (one per result would be %d); subjects: %s\n' \
    "$((commits_after - commits_before))" "$((many + 1))" \
    "$(printf '%s\n' "$subjects" | sed -e 's/^vault: record \([0-9]*\) results$/batch of \1/' \
        -e 's/^vault: .* succeeded$/single/' | sort | uniq -c | awk '{ $1 = $1; print }' | paste -sd, -)"
pool_done=$(git --git-dir="$work/ops.git" ls-tree --name-only main vault/actions/ | grep -c '^vault/actions/pool-.*\.result\.json$' || true)
starts=$(grep '^pool-' "$work/pool-starts" | sort)
printf 'results recorded for the pool run: %s; containers started: %s, distinct ids: %s\n' \
    "$pool_done" "$(printf '%s\n' "$starts" | grep -c . || true)" "$(printf '%s\n' "$starts" | sort -u | grep -c . || true)"

# 5. Latency from a merge to its container's start, the loop at defaults.
if [ "$samples" -gt 0 ]; then
    unset VAULT_INTERVAL VAULT_PARALLEL
    repo=$(basename "$work").git
    ln -s "$work/ops.git" "$VAULT_TESTBED_GIT_BASE/$repo"
    events=$work/events
    docker events --filter event=start --filter label=vault.managed=1 \
        --format '{{.TimeNano}} {{index .Actor.Attributes "vault.action"}}' >"$events" &
    events_pid=$!
    VAULT_REPO=$VAULT_TESTBED_GIT_URL/$repo sh dispatcher.sh 2>"$work/loop.log" &
    loop_pid=$!
    : >"$work/latency"
    for i in $(seq 1 "$samples"); do
        sleep "$(awk -v s="$i$$" 'BEGIN { srand(s); printf "%.3f", rand() * 2 }')"
        land "lat$i" 1
        t=$(date +%s%N)
        for _ in $(seq 1 600); do
            started=$(awk -v id="lat$i-1" '$2 == id { print $1; exit }' "$events")
            [ -n "$started" ] && break
            sleep 0.1
        done
        [ -n "$started" ] && echo $(((started - t) / 1000000)) >>"$work/latency"
    done
    kill "$loop_pid" "$events_pid" 2>/dev/null || :
    wait 2>/dev/null || :
    rm -f "$VAULT_TESTBED_GIT_BASE/$repo"
    sort -n "$work/latency" | awk -v n="$samples" '{ v[NR] = $1 }
        END {
            p50 = v[int((NR + 1) * 0.50)]; p95 = v[int((NR * 0.95) + 0.999)]
            printf "merge-to-start latency, loop at defaults (%d of %d seen): p50 %d ms, p95 %d ms, max %d ms (target p50 <= 2000, p95 <= 5000)\n", NR, n, p50, p95, v[NR]
        }'
fi
