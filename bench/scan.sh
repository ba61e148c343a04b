#!/usr/bin/env bash
# vault-scan benchmark: an ops repo with 100,000 finished actions (action +
# final result) and 10 pending, served as a local path (VAULT_REPO=<bare
# repo path>). After one cold run, the warm vault-scan (nothing new to
# fetch) is timed against `git ls-tree -r` of the same commit, in the same
# run, and vault-scan's peak RSS is taken from /usr/bin/time -v.
# A second phase lands one more result (the vault/actions tree changes, so
# the tree cache misses and only the result-blob cache helps) and times one
# scan of that. A fresh cache's one-time history learning is timed too.
# A third phase times the warm scan with approvals verified and results
# believed only when dispatcher-signed (the bench commit is signed with an
# ssh key, listed in both allowed-signers files) against the same scan with
# both off, interleaved in the same run: the cost of verification.
# Not a test: it prints numbers, it asserts nothing.
#
# Usage: bench/scan.sh [finished] [pending] [reps]   (default 100000 10 15)
set -euo pipefail
cd "$(dirname "$0")/.."

finished=${1:-100000}
pending=${2:-10}
reps=${3:-15}

if [ ! -x /usr/bin/time ]; then
    apt-get install -y -q time >/dev/null
fi
cargo build -q --release -p vault-scan
scan_bin=$PWD/target/release/vault-scan

work=$(mktemp -d /tmp/vault-bench-scan.XXXXXX)
trap '[ -n "${KEEP_WORK:-}" ] || rm -rf "$work"' EXIT
bare=$work/ops.git
cache=$work/cache
git init -q --bare -b main "$bare"

start=$(date +%s%N)
# Blobs through fast-import (marks), then the one big tree through mktree:
# fast-import's own tree handling is quadratic in a 200,000-entry folder.
awk -v n="$finished" -v p="$pending" -v names="$work/names" 'BEGIN {
    for (i = 1; i <= n + p; i++) {
        id = sprintf("act-%06d", i)
        a = sprintf("{\"id\":\"%s\",\"secrets\":[\"TOKEN\"],\"command\":[\"publish\",\"%d\"]}\n", id, i)
        printf "blob\nmark :%d\ndata %d\n%s", 2 * i, length(a), a
        print 2 * i, id ".json" >names
        if (i <= n) {
            r = sprintf("{\n  \"schema\": 1,\n  \"id\": \"%s\",\n  \"status\": \"succeeded\",\n  \"exit_code\": 0,\n  \"dispatcher\": \"bench\"\n}\n", id)
            printf "blob\nmark :%d\ndata %d\n%s", 2 * i + 1, length(r), r
            print 2 * i + 1, id ".result.json" >names
        }
    }
}' | git --git-dir="$bare" fast-import --quiet --export-marks="$work/marks"
actions=$(awk 'NR == FNR { sha[$1] = $2; next } { printf "100644 blob %s\t%s\n", sha[":" $1], $2 }' \
    "$work/marks" "$work/names" | git --git-dir="$bare" mktree)
vault=$(printf '040000 tree %s\tactions\n' "$actions" | git --git-dir="$bare" mktree)
readme=$(echo "ops repo" | git --git-dir="$bare" hash-object -w --stdin)
root=$(printf '100644 blob %s\tREADME.md\n040000 tree %s\tvault\n' "$readme" "$vault" |
    git --git-dir="$bare" mktree)
# Signed (gpg.format=ssh), so that phase 3 can verify it.
ssh-keygen -q -t ed25519 -N '' -f "$work/key"
echo "bench $(cut -d' ' -f1,2 "$work/key.pub")" >"$work/signers"
commit=$(echo bench | GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@vault-dispatch.invalid \
    GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@vault-dispatch.invalid \
    git --git-dir="$bare" -c gpg.format=ssh -c user.signingKey="$work/key" commit-tree -S "$root")
git --git-dir="$bare" update-ref refs/heads/main "$commit"
build_ms=$((($(date +%s%N) - start) / 1000000))
entries=$(git --git-dir="$bare" ls-tree -r "$commit" | wc -l)

scan=("$scan_bin" --repo "$bare" --cache "$cache" --dispatcher-id bench)

# Microseconds of one run of "$@", output discarded.
time_us() {
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000))
}

median() { # of microsecond lines, printed in milliseconds
    sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f", m / 1000 }'
}

rss_kib() {
    /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ { print $2 }'
}

cold_ms=$(($(time_us "${scan[@]}") / 1000))
lines=$("${scan[@]}" | wc -l)
scan_times=$work/scan.txt
ls_times=$work/ls.txt
for _ in $(seq "$reps"); do
    time_us "${scan[@]}" >>"$scan_times"
    time_us git --git-dir="$bare" ls-tree -r "$commit" >>"$ls_times"
done
scan_med=$(median <"$scan_times")
ls_med=$(median <"$ls_times")
ratio=$(awk -v a="$scan_med" -v b="$ls_med" 'BEGIN { printf "%.3f", a / b }')
warm_rss=$(rss_kib "${scan[@]}")
ls_rss=$(rss_kib git --git-dir="$bare" ls-tree -r "$commit")

# Phase 3: the same warm scan with both signature checks on, interleaved
# with it off. The first run with them on fills their caches (untimed).
signed=(env VAULT_ALLOWED_SIGNERS="$work/signers" VAULT_DISPATCHER_SIGNERS="$work/signers" "${scan[@]}")
sig_first_ms=$(($(time_us "${signed[@]}") / 1000))
"${signed[@]}" >"$work/signed.out"
approved=$(grep -c '"principal":"bench"' "$work/signed.out" || true)
off_times=$work/off.txt
on_times=$work/on.txt
for _ in $(seq "$reps"); do
    time_us "${scan[@]}" >>"$off_times"
    time_us "${signed[@]}" >>"$on_times"
done
off_med=$(median <"$off_times")
on_med=$(median <"$on_times")
sig_ratio=$(awk -v a="$on_med" -v b="$off_med" 'BEGIN { printf "%.3f", a / b }')
per_action=$(awk -v a="$on_med" -v b="$off_med" -v p="$pending" 'BEGIN { printf "%.3f", (a - b) / p }')

# Phase 2: one more result lands; the tree cache misses, the result-blob
# cache answers for the 100,000 others.
id=$(printf 'act-%06d' $((finished + 1)))
r="{\"schema\":1,\"id\":\"$id\",\"status\":\"failed\",\"dispatcher\":\"bench\"}"
{
    echo "commit refs/heads/main"
    echo "committer bench <bench@vault-dispatch.invalid> 1700000100 +0000"
    echo "data 5"; echo "more"
    echo "from $commit"
    echo "M 100644 inline vault/actions/$id.result.json"
    echo "data ${#r}"; echo "$r"
} | git --git-dir="$bare" fast-import --quiet
changed_ms=$(($(time_us "${scan[@]}") / 1000))
cold_rss=$(rm -rf "$cache" && rss_kib "${scan[@]}")
# A fresh cache learns once, from the first-parent history, every id that
# ever had a result (at-most-once after a deleted result): vault-scan
# --verbose says how long that took within the cold run.
learn=$(rm -rf "$cache" && "${scan[@]}" --verbose 2>&1 >/dev/null | sed -n 's/^vault-scan: fresh cache: //p')

cat <<REPORT
vault-scan benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m))
repo: $finished finished + $pending pending actions, $entries tree entries, served as a path; built in $build_ms ms
scan lines printed: $lines
cold scan (fresh cache, first fetch):     $cold_ms ms, peak RSS $cold_rss KiB
warm scan, median of $reps:              $scan_med ms
git ls-tree -r, median of $reps:         $ls_med ms
ratio warm scan / ls-tree:               $ratio   (target <= 1.0)
warm scan peak RSS:                      $warm_rss KiB   (target < 65536)
git ls-tree -r peak RSS:                 $ls_rss KiB
one new result landed (tree changed):    $changed_ms ms
fresh cache, history learned once:       $learn
signatures on, first scan (trust learned): $sig_first_ms ms
signatures on, warm scan, median of $reps: $on_med ms ($approved of $lines lines carry a verified approval)
signatures off, same run, median of $reps: $off_med ms
ratio signatures on / off:               $sig_ratio   (target < 2.0)
verification cost per pending action:    $per_action ms
REPORT
