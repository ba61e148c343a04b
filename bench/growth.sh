#!/usr/bin/env bash
# Cost per action against the size of the history: claim and result commit
# time, repo growth per action, and the scan after a new result, with 100,
# 10,000 and 100,000 finished actions in the ops repo; each tool's peak RSS
# on the largest. The repos are served by the testbed's git daemon on
# loopback (git://127.0.0.1), release build.
#
# Each repo is built with `git fast-import` (one commit a branch):
#   archive layout: N finished actions on the archive branch
#     vault-archive/main in vault/archive/<ab>/<cd>/ (where
#     `result-write --archive` moves them), ROUNDS + 4 pending in
#     vault/actions of main;
#   flat layout (N = the largest only, the contract before the archive, for
#     comparison): the N finished in vault/actions of main.
# Per round: vault-scan (it fetches the previous round's result: "scan after
# a new result"), `result-write --claim` of its first line, then
# `result-write` of a succeeded result for it. One untimed round first.
# Then, archive layout, one `result-write --archive --archive-after-s 0`
# (timed): it moves the rounds' ROUNDS + 1 actions, as dispatcher.sh's
# hourly step would. Growth: bytes
# of the files under the bare repo's objects/ after the rounds minus
# before (repacked), over ROUNDS: "loose" as pushed (git daemon unpacks
# small pushes into zlib'd loose objects), "packed" after `git repack -ad`. Medians; the ratio is the largest N's median
# over the smallest's, same run.
# Peak RSS (/usr/bin/time -v) on the largest archive repo: vault-scan
# warm, after a new result, and cold (fresh cache: first clone); result-write
# claim, result and --archive (one id, the push walks the whole archive); and, when dockerd and the testbed image are there,
# secret-mount and run-action of one dispatcher.sh --once cycle on that repo
# (each tool behind a /usr/bin/time shim).
# Not a test: it prints numbers, it asserts nothing.
#
# Usage (root): bench/growth.sh [SIZES] [ROUNDS]   (default "100 10000 100000" 20)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
sizes=${1:-100 10000 100000}
rounds=${2:-20}

if [ ! -x /usr/bin/time ]; then
    apt-get install -y -q time >/dev/null
fi
env_file=$(scripts/testbed.sh up)
# shellcheck disable=SC1090
. "$env_file"
cargo build -q --release --locked
bin=$root/target/release
work=$(mktemp -d /tmp/vault-bench-growth.XXXXXX)
base=$VAULT_TESTBED_GIT_BASE
trap 'rm -rf "$work" "$base"/bench-growth-*.git' EXIT
export VAULT_DISPATCHER_ID=bench

# build NAME N LAYOUT: the bare repo $base/NAME.git (see the header).
build() {
    local name=$1 n=$2 layout=$3 bare=$base/$1.git
    rm -rf "$bare"
    git init -q --bare -b main "$bare"
    python3 - "$n" $((rounds + 4)) "$layout" "$(date +%s)" "$work/actions.tree" <<'PY' |
import hashlib, sys, time
n, p, layout, now, tree_out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
out = sys.stdout.buffer
finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
flat = []  # (name, blob sha) of vault/actions, flat layout only

def put(path, text):
    data = text.encode()
    if layout == "flat":
        # A blob alone; the 200,000-entry tree is written raw below
        # (fast-import's tree handling is quadratic in one big folder).
        out.write(b"blob\ndata %d\n%s\n" % (len(data), data))
        sha = hashlib.sha1(b"blob %d\0" % len(data) + data).digest()
        flat.append((path.rsplit("/", 1)[1].encode(), sha))
    else:
        out.write(b"M 100644 inline %s\ndata %d\n%s" % (path.encode(), len(data), data))

def commit(ref, message):
    if layout != "flat":
        out.write(b"commit %s\ncommitter bench <bench@vault-dispatch.invalid> %d +0000\ndata %d\n%s\n"
                  % (ref, now, len(message), message))

commit(b"refs/heads/vault-archive/main", b"archive")
for i in range(1, n + 1):
    id = "done-%06d" % i
    h = hashlib.sha256(id.encode()).hexdigest()
    folder = "vault/actions" if layout == "flat" else "vault/archive/%s/%s" % (h[:2], h[2:4])
    put("%s/%s.json" % (folder, id), '{"id":"%s","secrets":["TOKEN"],"command":["publish","%d"]}\n' % (id, i))
    put("%s/%s.result.json" % (folder, id),
        '{\n  "schema": 1,\n  "id": "%s",\n  "status": "succeeded",\n  "exit_code": 0,\n'
        '  "finished_at": "%s",\n  "dispatcher": "bench"\n}\n' % (id, finished))
commit(b"refs/heads/main", b"bench")
for i in range(1, p + 1):
    id = "todo-%03d" % i
    put("vault/actions/%s.json" % id, '{"id":"%s","secrets":[],"command":["true"]}\n' % id)
if layout == "flat":
    with open(tree_out, "wb") as f:
        for name, sha in sorted(flat):
            f.write(b"100644 %s\0%s" % (name, sha))
PY
        git --git-dir="$bare" fast-import --quiet
    if [ "$layout" = flat ]; then
        local actions vault root
        actions=$(git --git-dir="$bare" hash-object -t tree -w --stdin <"$work/actions.tree")
        vault=$(printf '040000 tree %s\tactions\n' "$actions" | git --git-dir="$bare" mktree)
        root=$(printf '040000 tree %s\tvault\n' "$vault" | git --git-dir="$bare" mktree)
        git --git-dir="$bare" update-ref refs/heads/main \
            "$(echo bench | git --git-dir="$bare" commit-tree "$root")"
    fi
    git --git-dir="$bare" repack -adq
}

bytes() { # of the files under objects/ (loose and packed), not folders
    find "$1/objects" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rss_kib() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ { print $2 }'; }

# measure NAME ARCHIVE: the per-round medians, then (ARCHIVE=1) one
# `result-write --archive` of the rounds' actions; prints one line
# "scan_ms claim_ms result_ms archive_ms loose_kib packed_kib" (KiB per action).
measure() {
    local name=$1 archive=$2 url=$VAULT_TESTBED_GIT_URL/$1.git cache=$work/cache-$1 r t line
    local -a tools=(--repo "$url" --cache "$cache")
    : >"$work/$name.times"
    for r in $(seq 0 "$rounds"); do
        if [ "$r" = 1 ]; then
            git --git-dir="$base/$name.git" repack -adq
            before=$(bytes "$base/$name.git")
        fi
        t=$(date +%s%N)
        line=$("$bin/vault-scan" "${tools[@]}" | sed -n 1p)
        local scan_ms claim_ms result_ms
        scan_ms=$(ms_since "$t")
        t=$(date +%s%N)
        printf '%s\n' "$line" | "$bin/result-write" "${tools[@]}" --claim >/dev/null
        claim_ms=$(ms_since "$t")
        local id
        id=$(printf '%s\n' "$line" | sed -n 's/^{"schema":1,"id":"\([^"]*\)".*/\1/p')
        t=$(date +%s%N)
        printf '{"schema":1,"id":"%s","status":"succeeded","exit_code":0,"started_at":"%s","finished_at":"%s","duration_ms":1}\n' \
            "$id" "$(date -u +%FT%TZ)" "$(date -u +%FT%TZ)" |
            "$bin/result-write" "${tools[@]}" >/dev/null
        result_ms=$(ms_since "$t")
        [ "$r" -gt 0 ] && echo "$scan_ms $claim_ms $result_ms" >>"$work/$name.times"
    done
    local archive_ms=-
    if [ "$archive" = 1 ]; then
        t=$(date +%s%N)
        "$bin/result-write" "${tools[@]}" --archive --archive-after-s 0 >/dev/null
        archive_ms=$(ms_since "$t")
    fi
    local loose packed
    loose=$(bytes "$base/$name.git")
    git --git-dir="$base/$name.git" repack -adq
    packed=$(bytes "$base/$name.git")
    printf '%s %s %s %s %s %s\n' \
        "$(cut -d' ' -f1 "$work/$name.times" | median)" \
        "$(cut -d' ' -f2 "$work/$name.times" | median)" \
        "$(cut -d' ' -f3 "$work/$name.times" | median)" \
        "$archive_ms" \
        "$(awk -v a="$loose" -v b="$before" -v n="$rounds" 'BEGIN { printf "%.1f", (a - b) / n / 1024 }')" \
        "$(awk -v a="$packed" -v b="$before" -v n="$rounds" 'BEGIN { printf "%.1f", (a - b) / n / 1024 }')"
}

echo "growth benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m)), $rounds rounds each"
printf '%-24s %8s %8s %9s %9s %10s %13s %14s\n' "repo" "objects" "scan ms" "claim ms" "result ms" "archive ms" "KiB/act loose" "KiB/act packed"
largest=
for n in $sizes; do
    t=$(date +%s%N)
    build "bench-growth-$n" "$n" archive
    objects=$(git --git-dir="$base/bench-growth-$n.git" count-objects -v | awk '/^in-pack:/ { print $2 }')
    read -r s c w a g k < <(measure "bench-growth-$n" 1)
    printf '%-24s %8s %8s %9s %9s %10s %13s %14s   (built in %d ms)\n' "archive, $n finished" "$objects" "$s" "$c" "$w" "$a" "$g" "$k" "$(ms_since "$t")"
    echo "$n $s $c $w $g $k $a" >>"$work/summary"
    largest=$n
done
build "bench-growth-flat" "$largest" flat
objects=$(git --git-dir="$base/bench-growth-flat.git" count-objects -v | awk '/^in-pack:/ { print $2 }')
read -r s c w a g k < <(measure "bench-growth-flat" 0)
printf '%-24s %8s %8s %9s %9s %10s %13s %14s\n' "flat, $largest finished" "$objects" "$s" "$c" "$w" "$a" "$g" "$k"
awk -v r="$((rounds + 1))" 'NR == 1 { s = $2; c = $3; w = $4 } { ls = $2; lc = $3; lw = $4; lg = $5; lk = $6; la = $7; n = $1 }
    END {
        printf "ratio %d / smallest: scan %.2f, claim %.2f, result %.2f (target <= 2)\n", n, ls / s, lc / c, lw / w
        printf "growth at %d, archive step included: %.1f KiB/action loose, %.1f packed (target <= 64); the archive step moved %d ids in %d ms\n", n, lg, lk, r, la
    }' "$work/summary"

# Peak RSS on the largest archive repo.
name=bench-growth-$largest
url=$VAULT_TESTBED_GIT_URL/$name.git
cache=$work/cache-$name
tools=(--repo "$url" --cache "$cache")
scan_warm=$(rss_kib "$bin/vault-scan" "${tools[@]}")
line=$("$bin/vault-scan" "${tools[@]}" | sed -n 1p)
id=$(printf '%s\n' "$line" | sed -n 's/^{"schema":1,"id":"\([^"]*\)".*/\1/p')
claim_rss=$(printf '%s\n' "$line" | rss_kib "$bin/result-write" "${tools[@]}" --claim)
result_rss=$(printf '{"schema":1,"id":"%s","status":"succeeded","finished_at":"%s"}\n' "$id" "$(date -u +%FT%TZ)" |
    rss_kib "$bin/result-write" "${tools[@]}")
scan_new=$(rss_kib "$bin/vault-scan" "${tools[@]}")
archive_rss=$(rss_kib "$bin/result-write" "${tools[@]}" --archive --archive-after-s 0)
scan_cold=$(rm -rf "$cache" && rss_kib "$bin/vault-scan" "${tools[@]}")
printf 'peak RSS on %s (KiB, target < 65536): vault-scan warm %s, after a new result %s, cold (first clone) %s; result-write --claim %s, result %s, --archive (one id) %s\n' \
    "$name" "$scan_warm" "$scan_new" "$scan_cold" "$claim_rss" "$result_rss" "$archive_rss"

if docker info >/dev/null 2>&1 && docker image inspect "$VAULT_TESTBED_IMAGE" >/dev/null 2>&1; then
    shims=$work/shims
    mkdir -p "$shims" "$work/secrets"
    for tool in vault-scan secret-mount run-action result-write; do
        printf '#!/bin/sh\nexec /usr/bin/time -a -o %s -f "%s %%M" %s "$@"\n' \
            "$work/rss.log" "$tool" "$bin/$tool" >"$shims/$tool"
        chmod +x "$shims/$tool"
    done
    age-keygen -o "$work/identity.txt" 2>/dev/null
    VAULT_BIN_DIR=$shims VAULT_REPO=$url VAULT_CACHE=$cache VAULT_IDENTITY=$work/identity.txt \
        VAULT_SECRETS=$work/secrets VAULT_MOUNT_ROOT=$work/mounts VAULT_PARALLEL=1 \
        VAULT_RUNNER_IMAGE=$VAULT_TESTBED_IMAGE VAULT_ALLOW_IMAGES=$VAULT_TESTBED_IMAGE \
        sh dispatcher.sh --once >/dev/null 2>"$work/cycle.err" || :
    echo "peak RSS per tool over one dispatcher.sh --once cycle on $name (KiB, max over its calls):"
    awk '{ if ($NF > m[$1]) m[$1] = $NF; n[$1]++ } END { for (t in m) printf "  %-13s %6d  (%d calls)\n", t, m[t], n[t] }' "$work/rss.log" | sort
fi
