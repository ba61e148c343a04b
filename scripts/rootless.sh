#!/usr/bin/env bash
# The rootless bench: rootless Podman's Docker-compatible API, served by an
# unprivileged user, with a tmpfs of that user's for secret-mount's
# unprivileged mode. No root daemon and no root-owned socket take part.
# Idempotent: `up` installs what is missing, starts what is not answering,
# and writes two env files; it prints the first one's path.
#
#   scripts/rootless.sh up     # as root; prints $VAULT_ROOTLESS_DIR/env
#   scripts/rootless.sh down   # stops the service `up` started
#
# $VAULT_ROOTLESS_DIR/env         VAULT_ROOTLESS_* coordinates for the tests
#                                 (safe to source next to the testbed's env:
#                                 it sets no DOCKER_HOST)
# $VAULT_ROOTLESS_DIR/tools.env   what the tools export when they run as the
#                                 user (DOCKER_HOST, VAULT_SECRETS_TMPFS, ...)
#
# docs/deploy/rootless.md is the same setup for a production host.
set -euo pipefail

dir=${VAULT_ROOTLESS_DIR:-/tmp/vault-rootless}
user=${VAULT_ROOTLESS_USER:-vaultci}
tmpfs=${VAULT_ROOTLESS_TMPFS:-/run/vault-rootless/secrets}
image=${VAULT_ROOTLESS_IMAGE:-localhost/vault-runner:test}

log() { printf 'rootless: %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "must run as root (it installs packages, creates a user and mounts a tmpfs)"
        exit 1
    fi
}

install_packages() {
    local missing=() p
    for p in podman uidmap slirp4netns fuse-overlayfs catatonit busybox-static; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    command -v runuser >/dev/null || missing+=(util-linux)
    command -v curl >/dev/null || missing+=(curl)
    [ ${#missing[@]} -gt 0 ] || return 0
    log "installing ${missing[*]}"
    # The lists may be missing or stale on a fresh machine: refresh once.
    apt-get update -qq
    # Install without starting any service the packages ship: this script
    # starts the one it needs, as the unprivileged user.
    local policy=/usr/sbin/policy-rc.d added=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
    fi
    NEEDRESTART_SUSPEND=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || rc=$?
    [ "$added" = 0 ] || rm -f "$policy"
    if [ "$rc" != 0 ]; then
        log "apt-get install ${missing[*]} failed (exit $rc)"
        exit 1
    fi
}

# The next free subordinate id range in FILE (/etc/subuid or /etc/subgid).
next_range_start() {
    awk -F: 'BEGIN { s = 100000 } { e = $2 + $3; if (e > s) s = e } END { print s }' "$1" 2>/dev/null \
        || echo 100000
}

create_user() {
    if ! id "$user" >/dev/null 2>&1; then
        log "creating user $user"
        useradd --create-home --shell /bin/sh --user-group "$user"
    fi
    uid=$(id -u "$user")
    gid=$(id -g "$user")
    home=$(getent passwd "$user" | cut -d: -f6)
    if [ "$uid" = 0 ]; then
        log "$user is uid 0: refusing (the point is an unprivileged user)"
        exit 1
    fi
    # Rootless Podman maps the container's ids through subordinate ranges.
    local f start
    for f in /etc/subuid /etc/subgid; do
        touch "$f"
        if ! grep -q "^$user:" "$f"; then
            start=$(next_range_start "$f")
            log "adding $f range $start-$((start + 65535)) for $user"
            if [ "$f" = /etc/subuid ]; then
                usermod --add-subuids "$start-$((start + 65535))" "$user"
            else
                usermod --add-subgids "$start-$((start + 65535))" "$user"
            fi
        fi
    done
    runtime_dir=/run/user/$uid
    install -d -m 0755 /run/user
    install -d -m 0700 -o "$uid" -g "$gid" "$runtime_dir"
    install -d -m 0755 -o "$uid" -g "$gid" "$home/.config" "$home/.config/containers"
    write_containers_conf
}

# The user's containers.conf. No systemd user session here, maybe cgroup
# v1: plain cgroupfs; events to a file, so `podman events` can read them
# back.
write_containers_conf() {
    local conf=$home/.config/containers/containers.conf want
    want='[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"'
    if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
        log "writing $conf"
        printf '%s\n' "$want" >"$conf"
        chown "$uid:$gid" "$conf"
        conf_changed=1
    fi
}

# as_user CMD...: run CMD as the user, with its own environment only.
as_user() {
    runuser -u "$user" -- env -i HOME="$home" USER="$user" LOGNAME="$user" \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin XDG_RUNTIME_DIR="$runtime_dir" "$@"
}

is_mountpoint() { mountpoint -q "$1"; }

mount_tmpfs() {
    install -d -m 0755 "$(dirname "$tmpfs")"
    if ! is_mountpoint "$tmpfs"; then
        install -d -m 0700 -o "$uid" -g "$gid" "$tmpfs"
        log "mounting the secrets tmpfs on $tmpfs"
        local opts="nosuid,nodev,noexec,mode=0700,uid=$uid,gid=$gid,size=16m"
        # Secrets never go to swap: tmpfs with noswap (Linux 6.4+), else
        # ramfs (never swapped).
        if ! mount -t tmpfs -o "$opts,noswap" tmpfs "$tmpfs" 2>/dev/null; then
            log "tmpfs has no noswap here: using ramfs"
            mount -t ramfs -o nosuid,nodev,noexec,mode=0700 ramfs "$tmpfs"
            chown "$uid:$gid" "$tmpfs"
            chmod 0700 "$tmpfs"
        fi
    fi
    local owner
    owner=$(stat -c %u "$tmpfs")
    if [ "$owner" != "$uid" ]; then
        log "$tmpfs is owned by uid $owner, not $user"
        exit 1
    fi
}

sock() { echo "$runtime_dir/podman/podman.sock"; }

service_answers() {
    [ -S "$(sock)" ] && as_user curl -fsS --max-time 5 --unix-socket "$(sock)" \
        http://d/_ping >/dev/null 2>&1
}

# The rootless mount namespace is copied once, when the user's first
# podman command starts its pause process, and is private: a tmpfs mounted
# (or remounted) after that is not the one its containers see (they bind
# the empty folder beneath, or an old tmpfs). Check from inside that it is
# the very same file system (same device); if not, reset the namespace.
tmpfs_seen_by_podman() {
    local host inside
    host=$(stat -c %d "$tmpfs")
    inside=$(as_user podman unshare stat -c %d "$tmpfs" 2>/dev/null) || return 1
    [ "$host" = "$inside" ]
}

stop_service() {
    local pidfile=$dir/podman.pid
    if [ -f "$pidfile" ]; then
        local pid
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$pidfile"
    fi
}

start_service() {
    if ! tmpfs_seen_by_podman; then
        log "the user's podman namespace predates $tmpfs: resetting it (podman system migrate)"
        stop_service
        as_user podman system migrate >/dev/null 2>&1 || true
        if ! tmpfs_seen_by_podman; then
            log "$tmpfs is still not visible in $user's podman mount namespace"
            exit 1
        fi
    fi
    if [ "$conf_changed" = 0 ] && service_answers; then
        return
    fi
    stop_service
    log "starting podman system service as $user on $(sock)"
    install -d -m 0700 -o "$uid" -g "$gid" "$runtime_dir/podman"
    # setsid: the service outlives this script and is not in its group.
    nohup setsid runuser -u "$user" -- env -i HOME="$home" USER="$user" LOGNAME="$user" \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin XDG_RUNTIME_DIR="$runtime_dir" \
        podman system service --time=0 "unix://$(sock)" >"$dir/podman.log" 2>&1 </dev/null &
    echo $! >"$dir/podman.pid"
    for _ in $(seq 1 120); do
        service_answers && return
        sleep 0.5
    done
    log "podman system service did not answer within 60 s; its log:"
    tail -20 "$dir/podman.log" >&2
    exit 1
}

build_image() {
    if as_user podman image exists "$image"; then
        return
    fi
    log "building $image from busybox-static (as $user)"
    # The same root filesystem as the testbed's dockerd image.
    "$(dirname "$0")/testbed.sh" rootfs \
        | as_user podman import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' -q - "$image" >/dev/null
}

cgroup_version() {
    if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then echo 2; else echo 1; fi
}

write_env() {
    local host
    host="unix://$(sock)"
    cat >"$dir/env" <<EOF
export VAULT_ROOTLESS_DIR=$dir
export VAULT_ROOTLESS_USER=$user
export VAULT_ROOTLESS_UID=$uid
export VAULT_ROOTLESS_GID=$gid
export VAULT_ROOTLESS_HOME=$home
export VAULT_ROOTLESS_XDG_RUNTIME_DIR=$runtime_dir
export VAULT_ROOTLESS_DOCKER_HOST=$host
export VAULT_ROOTLESS_SECRETS_TMPFS=$tmpfs
export VAULT_ROOTLESS_IMAGE=$image
export VAULT_ROOTLESS_CGROUP=$(cgroup_version)
EOF
    # What the tools export when they run as the user. The runner user is
    # the service user's own uid:gid: secret-mount (unprivileged) writes
    # the 0400 files as that user, and run-action maps the runner's uid to
    # it (UsernsMode keep-id) on Podman.
    cat >"$dir/tools.env" <<EOF
export DOCKER_HOST=$host
export XDG_RUNTIME_DIR=$runtime_dir
export VAULT_SECRETS_TMPFS=$tmpfs
export VAULT_RUNNER_USER=$uid:$gid
export VAULT_RUNNER_IMAGE=$image
export VAULT_ALLOW_IMAGES=$image
EOF
    chmod 0644 "$dir/env" "$dir/tools.env"
}

conf_changed=0

case "${1:-up}" in
up)
    need_root
    install -d -m 0755 "$dir"
    install_packages
    create_user
    # Before any podman command of the user: see tmpfs_seen_by_podman.
    mount_tmpfs
    start_service
    build_image
    write_env
    echo "$dir/env"
    ;;
down)
    need_root
    stop_service
    ;;
*)
    log "usage: $0 up|down"
    exit 2
    ;;
esac
