#!/usr/bin/env bash
# Build the base image localhost/debian-python:bookworm from Debian's packages, for machines that reach
# Debian's mirror but no image registry (see docs/container.md). Idempotent: does nothing when the image
# exists (pass --force to rebuild). Needs root, podman and debootstrap:
#   apt-get install -y podman runc debootstrap
# Then build the proxy on it:
#   podman build --runtime runc --network host --pull=never --format docker \
#     -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
#     --build-arg BASE_IMAGE=localhost/debian-python:bookworm -t durable-proxy:dev .
#
# Environment: BASE_IMAGE (the tag to create), DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (default: the
# Debian mirror apt already uses, read from /etc/apt/sources.list*), PODMAN (podman).
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/debian-python:bookworm}
SUITE=${DEBIAN_SUITE:-bookworm}
PODMAN=${PODMAN:-podman}
# python3-venv brings ensurepip (so `python3 -m venv` gives a venv with pip); python3-pip gives a
# system pip too; ca-certificates lets pip verify PyPI.
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
LOCK=/var/tmp/durable-proxy-container-base.lock

force=0
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "container_base.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { echo "container_base.sh: $*" >&2; }

command -v "$PODMAN" >/dev/null || { log "$PODMAN not found: apt-get install -y podman runc debootstrap"; exit 1; }

exists() { "$PODMAN" image exists "$BASE_IMAGE"; }

if [[ $force == 0 ]] && exists; then
    log "$BASE_IMAGE exists, nothing to do (--force rebuilds it)"
    exit 0
fi

[[ $(id -u) == 0 ]] || { log "debootstrap needs root"; exit 1; }
command -v debootstrap >/dev/null || { log "debootstrap not found: apt-get install -y debootstrap"; exit 1; }

# One builder at a time (parallel test runs); the loser finds the image made by the winner.
exec 9>"$LOCK"
flock 9
if [[ $force == 0 ]] && exists; then
    log "$BASE_IMAGE was built meanwhile, nothing to do"
    exit 0
fi

# The mirror apt already uses for "$SUITE" (deb822 .sources files, then one-line .list files).
find_mirror() {
    local files=()
    shopt -s nullglob
    files=(/etc/apt/sources.list.d/*.sources)
    if ((${#files[@]})); then
        awk -v suite="$SUITE" '
            function flush() { if (uris != "" && has_suite && types ~ /(^| )deb( |$)/) { split(uris, u, " "); print u[1]; found = 1; exit } }
            /^[[:space:]]*$/ { flush(); uris = ""; has_suite = 0; types = ""; next }
            /^[[:space:]]*#/ { next }
            /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
            /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) has_suite = 1 }
            END { if (!found) flush() }
        ' "${files[@]}" | head -n1
    fi
    files=(/etc/apt/sources.lis[t] /etc/apt/sources.list.d/*.list)  # [t]: only if it exists (nullglob)
    if ((${#files[@]})); then
        awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }
        ' "${files[@]}" | head -n1
    fi
}
MIRROR=${DEBIAN_MIRROR:-$(find_mirror | head -n1 || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

work=$(mktemp -d /var/tmp/debian-python.XXXXXX)
rootfs=$work/rootfs
cleanup() {
    # debootstrap mounts proc/sys inside the tree while it runs: never delete through a mount.
    local target
    if [[ -d $rootfs ]]; then
        while read -r target; do
            umount -l "$target" 2>/dev/null || true
        done < <(awk -v root="$rootfs" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r)
    fi
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

start=$SECONDS
log "debootstrap --variant=minbase $SUITE from $MIRROR (about 1-2 minutes)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    log "debootstrap failed"
    exit 1
}
[[ -x $rootfs/usr/bin/python3 && -d $rootfs/usr/lib/python3.11/ensurepip ]] || {
    log "the tree has no python3 with ensurepip"
    exit 1
}

# Slim it: package caches and indexes, docs, man pages (apt-get update brings the indexes back).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log

log "importing as $BASE_IMAGE"
tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -C "$rootfs" -c . |
    "$PODMAN" import --quiet \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE $MIRROR" \
        - "$BASE_IMAGE" >/dev/null
exists || { log "podman import did not create $BASE_IMAGE"; exit 1; }
log "built $BASE_IMAGE in $((SECONDS - start))s"
