#!/usr/bin/env bash
# The real test bench: dockerd, a git daemon on 127.0.0.1, age, a busybox
# runner image. Idempotent: `up` installs what is missing, starts what is not
# answering, and writes $VAULT_TESTBED_DIR/env for the tests to source.
#
#   scripts/testbed.sh up     # prints the env file's path
#   scripts/testbed.sh down   # stops what `up` started
#   scripts/testbed.sh rootfs # the runner image's root filesystem, as tar
set -euo pipefail

dir=${VAULT_TESTBED_DIR:-/tmp/vault-testbed}
git_port=${VAULT_TESTBED_GIT_PORT:-9418}
image=${VAULT_TESTBED_IMAGE:-vault-runner:test}

log() { printf 'testbed: %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "must run as root (it installs packages and starts dockerd)"
        exit 1
    fi
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v age >/dev/null || missing+=(age)
    dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
    command -v git >/dev/null || missing+=(git)
    command -v shellcheck >/dev/null || missing+=(shellcheck)
    command -v flock >/dev/null || missing+=(util-linux)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
    # The https tests: a self-signed certificate and a TLS git server.
    command -v openssl >/dev/null || missing+=(openssl)
    # The egress test's runner image carries the host's curl.
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    # The metrics test parses the textfile with Prometheus' own Python parser
    # (Debian's, under /usr/bin/python3: a python3 earlier on PATH may lack it).
    /usr/bin/python3 -c 'import prometheus_client' 2>/dev/null || missing+=(python3-prometheus-client)
    # The ssh tests run their own sshd on 127.0.0.1.
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    # The compose deployment test: docker-compose 1.29 and the base image
    # made with debootstrap (scripts/base-image.sh), cached with zstd.
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v zstd >/dev/null || missing+=(zstd)
    # The systemd deployment test boots Debian's systemd in namespaces.
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq
        # Install without starting the packages' services (a system sshd on
        # port 22, a stock dockerd): the testbed starts its own, on loopback.
        local policy=/usr/sbin/policy-rc.d added=0 rc=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || rc=$?
        [ "$added" = 0 ] || rm -f "$policy"
        if [ "$rc" != 0 ]; then
            log "apt-get install ${missing[*]} failed (exit $rc)"
            exit 1
        fi
    fi
    # gVisor is optional: tests of VAULT_RUNTIME=runsc run when it is here.
    if ! command -v runsc >/dev/null && [ "${VAULT_TESTBED_RUNSC:-1}" = 1 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >/dev/null 2>&1 \
            || log "runsc not installable; gVisor tests will be skipped"
    fi
}

start_dockerd() {
    if docker info >/dev/null 2>&1; then
        return
    fi
    mkdir -p "$dir/docker"
    local conf="$dir/docker/daemon.json"
    if command -v runsc >/dev/null; then
        cat >"$conf" <<EOF
{"runtimes": {"runsc": {"path": "$(command -v runsc)", "runtimeArgs": ["--platform=ptrace", "--network=none"]}}}
EOF
    else
        echo '{}' >"$conf"
    fi
    log "starting dockerd"
    # containerd ships with docker.io; dockerd starts its own when none runs.
    nohup dockerd --config-file "$conf" --storage-driver=vfs --bridge=none --iptables=false \
        --ip-masq=false -H unix:///var/run/docker.sock >"$dir/docker/dockerd.log" 2>&1 &
    echo $! >"$dir/docker/dockerd.pid"
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && return
        sleep 0.5
    done
    log "dockerd did not answer within 60 s; its log:"
    tail -20 "$dir/docker/dockerd.log" >&2
    exit 1
}

# The runner image's root filesystem as a tar stream on stdout: busybox and
# its applets, /tmp, and passwd/group naming root and nobody (65534), all
# owned by root. scripts/rootless.sh imports the same stream into Podman.
runner_rootfs_tar() {
    local root
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/etc"
    chmod 0755 "$root"
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" --owner=0 --group=0 -c .
    rm -rf "$root"
}

build_image() {
    if docker image inspect "$image" >/dev/null 2>&1; then
        return
    fi
    log "building $image from busybox-static"
    runner_rootfs_tar | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$image" >/dev/null
}

start_git_daemon() {
    mkdir -p "$dir/git"
    if (exec 3<>"/dev/tcp/127.0.0.1/$git_port") 2>/dev/null; then
        return
    fi
    log "starting git daemon on 127.0.0.1:$git_port"
    nohup git daemon --reuseaddr --listen=127.0.0.1 --port="$git_port" --export-all \
        --enable=receive-pack --base-path="$dir/git" "$dir/git" \
        >"$dir/git-daemon.log" 2>&1 &
    echo $! >"$dir/git-daemon.pid"
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$git_port") 2>/dev/null && return
        sleep 0.1
    done
    log "git daemon did not listen; its log:"
    cat "$dir/git-daemon.log" >&2
    exit 1
}

write_env() {
    local runsc=0
    if command -v runsc >/dev/null && docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q runsc; then
        runsc=1
    fi
    cat >"$dir/env" <<EOF
export VAULT_TESTBED_DIR=$dir
export VAULT_TESTBED_GIT_BASE=$dir/git
export VAULT_TESTBED_GIT_URL=git://127.0.0.1:$git_port
export VAULT_TESTBED_IMAGE=$image
export VAULT_TESTBED_RUNSC=$runsc
EOF
}

case "${1:-up}" in
up)
    need_root
    mkdir -p "$dir"
    install_packages
    start_dockerd
    build_image
    start_git_daemon
    write_env
    echo "$dir/env"
    ;;
rootfs)
    runner_rootfs_tar
    ;;
down)
    for pidfile in "$dir/git-daemon.pid" "$dir/docker/dockerd.pid"; do
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
    ;;
*)
    log "usage: $0 up|down|rootfs"
    exit 2
    ;;
esac
