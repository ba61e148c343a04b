#!/usr/bin/env bash
# Make the base image the shipped Dockerfiles start FROM, debian:bookworm-slim,
# on a machine that cannot pull from a registry (CI, the test bench): debootstrap
# Debian bookworm (variant minbase) from Debian's own mirror, slim it the way
# the official -slim image is slimmed, and `docker import` it under that tag.
# Where a registry is reachable, `docker pull debian:bookworm-slim` does the
# same job and this script is not needed.
#
#   scripts/base-image.sh           # import unless the tag is already present
#   scripts/base-image.sh --force   # import again even if it is present
#
# The rootfs tarball is cached ($VAULT_BASE_CACHE, default
# /var/cache/vault-ci/bookworm.tar.zst), so a later run on the same machine
# imports it without debootstrap; delete it to start again from the mirror.
# Packages are those of the bookworm point release on the mirror; the
# Dockerfiles' `apt-get install` steps fetch current versions of what they add.
# Needs root (debootstrap; installs debootstrap and zstd when missing) and a
# running dockerd.
set -euo pipefail

tag=${VAULT_BASE_IMAGE:-debian:bookworm-slim}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cache=${VAULT_BASE_CACHE:-/var/cache/vault-ci/bookworm.tar.zst}

log() { printf 'base-image: %s\n' "$*" >&2; }

force=0
case "${1:-}" in
--force) force=1 ;;
'') ;;
-h | --help)
    sed -n '2,18s/^# \{0,1\}//p' "$0"
    exit 0
    ;;
*)
    log "unknown argument: $1 (usage: base-image.sh [--force])"
    exit 2
    ;;
esac

if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag is present"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    log "must run as root (debootstrap)"
    exit 1
fi

mkdir -p "$(dirname "$cache")"
# One run at a time per cache file (two test runs may start together).
exec 9>>"$cache.lock"
flock 9

need=()
command -v zstd >/dev/null || need+=(zstd)
[ -s "$cache" ] || command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=
# Remove the scratch rootfs, first unmounting whatever a failed debootstrap
# left mounted in it (proc, sys, dev binds); never cross into another
# file system.
cleanup() {
    [ -n "$work" ] || return 0
    local m
    awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while IFS= read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$work"
    work=
}
trap cleanup EXIT

build_rootfs() {
    local root
    work=$(mktemp -d /var/tmp/vault-base.XXXXXX)
    root=$work/rootfs
    log "debootstrap --variant=minbase $suite from $mirror (a few minutes)"
    if ! debootstrap --variant=minbase --components=main "$suite" "$root" "$mirror" \
        >"$work/debootstrap.log" 2>&1; then
        log "debootstrap failed; the end of its log:"
        tail -20 "$work/debootstrap.log" >&2
        [ -f "$root/debootstrap/debootstrap.log" ] && tail -20 "$root/debootstrap/debootstrap.log" >&2
        exit 1
    fi

    # Apt sources as in the official image: the release, its updates and
    # the security archive.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # What the official -slim image does to stay small: no docs, man pages
    # or translations installed later, no apt caches kept, no language
    # indexes fetched.
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' \
        >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/groff/"* \
        "$root/usr/share/lintian/"* "$root/usr/share/linda/"*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin \
        "$root/var/cache/apt/archives/"*.deb "$root/var/log/"*.log \
        "$root/var/log/apt/"* "$root/tmp/"* "$root/var/tmp/"*
    # Docker provides these at run time; do not ship the build host's.
    : >"$root/etc/resolv.conf"
    echo localhost >"$root/etc/hostname"
    [ ! -e "$root/etc/machine-id" ] || : >"$root/etc/machine-id"

    log "caching the rootfs in $cache"
    tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -C "$root" -cf - . | zstd -q -f -T0 -10 -o "$cache.tmp"
    mv -f "$cache.tmp" "$cache"
    cleanup
}

if [ ! -s "$cache" ]; then
    build_rootfs
else
    log "using the cached rootfs $cache"
fi

log "importing $tag"
zstd -dcq "$cache" | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' \
    -c 'LABEL vault-dispatch.base-image=debootstrap' \
    - "$tag" >/dev/null
log "$tag imported"
