#!/usr/bin/env bash
# vault-scan's one-time history learning on a fresh cache: an ops repo whose
# watched branch has a long first-parent history (each action landed, then
# claimed, then given a final result: three commits each), served as a local
# path. A fresh cache walks that history once to learn every id that ever
# had a claim or a result; `vault-scan --verbose` says how long it took.
# Baseline, in the same run: `git log --first-parent --raw -- vault/actions`
# over the same commits (git reading the same tree diffs).
# Not a test: it prints numbers, it asserts nothing.
#
# Usage: bench/history.sh [actions] [reps]   (default 3000 3)
set -euo pipefail
cd "$(dirname "$0")/.."

actions=${1:-3000}
reps=${2:-3}

cargo build -q --release -p vault-scan
scan_bin=$PWD/target/release/vault-scan

work=$(mktemp -d /tmp/vault-bench-history.XXXXXX)
trap '[ -n "${KEEP_WORK:-}" ] || rm -rf "$work"' EXIT
bare=$work/ops.git
git init -q --bare -b main "$bare"

start=$(date +%s%N)
awk -v n="$actions" 'BEGIN {
    t = 1700000000
    for (i = 1; i <= n; i++) {
        id = sprintf("act-%06d", i)
        a = sprintf("{\"id\":\"%s\",\"secrets\":[],\"command\":[\"publish\",\"%d\"]}\n", id, i)
        c = sprintf("{\"schema\":1,\"id\":\"%s\",\"status\":\"running\",\"dispatcher\":\"bench\"}\n", id)
        r = sprintf("{\"schema\":1,\"id\":\"%s\",\"status\":\"succeeded\",\"dispatcher\":\"bench\"}\n", id)
        split("approve claim result", what, " ")
        for (k = 1; k <= 3; k++) {
            print "commit refs/heads/main"
            printf "committer bench <bench@vault-dispatch.invalid> %d +0000\n", t++
            printf "data %d\n%s\n", length(what[k]), what[k]
            if (k == 1) { path = id ".json"; body = a }
            else { path = id ".result.json"; body = (k == 2) ? c : r }
            printf "M 100644 inline vault/actions/%s\ndata %d\n%s", path, length(body), body
        }
    }
}' | git --git-dir="$bare" fast-import --quiet
build_ms=$((($(date +%s%N) - start) / 1000000))
commits=$(git --git-dir="$bare" rev-list --count main)

ms_of() { # milliseconds of one run of "$@", output discarded
    local t0
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1
    echo $((($(date +%s%N) - t0) / 1000000))
}

learn=$work/learn.txt
cold=$work/cold.txt
base=$work/base.txt
for _ in $(seq "$reps"); do
    rm -rf "$work/cache"
    # The fetch (a one-time clone) is done first, then the learning alone
    # is what --verbose reports.
    t0=$(date +%s%N)
    "$scan_bin" --repo "$bare" --cache "$work/cache" --dispatcher-id bench --verbose 2>"$work/err" >/dev/null
    echo $((($(date +%s%N) - t0) / 1000000)) >>"$cold"
    sed -n 's/.*learned .* in \([0-9]*\) ms$/\1/p' "$work/err" >>"$learn"
    ms_of git --git-dir="$bare" log --first-parent --format=%H --raw main -- vault/actions >>"$base"
done
med() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
learn_ms=$(med <"$learn")
cold_ms=$(med <"$cold")
base_ms=$(med <"$base")
ratio=$(awk -v a="$learn_ms" -v b="$base_ms" 'BEGIN { printf "%.2f", a / b }')
learned=$(sed -n 's/.*learned \([0-9]*\) ids.*/\1/p' "$work/err")

cat <<REPORT
vault-scan history benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m))
repo: $actions actions, $commits first-parent commits (land, claim, result each), served as a path; built in $build_ms ms
ids learned:                                   $learned
history learning (fresh cache), median of $reps:  $learn_ms ms
whole cold run (clone + learning + scan):      $cold_ms ms
git log --first-parent --raw, median of $reps:    $base_ms ms
ratio learning / git log:                      $ratio
REPORT
