#!/usr/bin/env bash
# Provides the two base images the Dockerfile starts from. Where a registry is reachable, the
# official debian:bookworm-slim and rust:1-bookworm are pulled and used. Elsewhere they are
# built locally, under our own names so that they never shadow the official images:
#
#   whisper-api-base/debian:bookworm-slim  a minimal Debian bookworm root (debootstrap, `docker import`)
#   whisper-api-base/rust:1-bookworm       that root plus build-essential/cmake/clang/libclang and
#                                          this machine's own Rust toolchain (`rustc --print sysroot`)
#
# The names chosen go to the builds as build args: `--print` writes them as
# RUST_IMAGE=... and RUNTIME_IMAGE=... lines (scripts/deploy.sh and the tests pass each as
# --build-arg; the Dockerfile's defaults are the official names).
#
# On a machine that reaches Docker Hub these tags are simply pulled and this script is not
# needed; here no registry is reachable, so they are made from Debian's package mirror and the
# host's rustup toolchain. CA certificates the host added under /usr/local/share/ca-certificates
# (a TLS-intercepting proxy, for example) are carried into both images, so that apt, cargo and
# curl inside builds and containers trust what the host trusts.
#
# Where a registry is reachable (GitHub's runners), the official images are pulled instead.
# Idempotent: an image whose tag exists (and, for the builder, whose recorded rustc version
# matches the host's) is kept. --force rebuilds both.
#
# Usage: scripts/docker-base-images.sh [--force|--print]
# Environment: DEBIAN_MIRROR (default: the host's apt mirror, else http://deb.debian.org/debian),
#              DEBIAN_SUITE (bookworm), BASE_IMAGE, BUILDER_IMAGE (the local names above).
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT_DIR
readonly DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
readonly OFFICIAL_BASE=debian:bookworm-slim OFFICIAL_BUILDER=rust:1-bookworm
readonly BASE_IMAGE="${BASE_IMAGE:-whisper-api-base/debian:bookworm-slim}"
readonly BUILDER_IMAGE="${BUILDER_IMAGE:-whisper-api-base/rust:1-bookworm}"
readonly BUILDER_DOCKERFILE="$ROOT_DIR/deploy/base/builder.Dockerfile"
readonly LABEL_KIND="org.whisper-api.base"

FORCE=0 PRINT=0
[[ "${1:-}" == "--force" ]] && FORCE=1
[[ "${1:-}" == "--print" ]] && PRINT=1

log() { printf '[base-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

require() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is required ($2)"
}

# The mirror the host's apt already uses, so the images fetch from the same place.
host_mirror() {
    local uri
    uri="$(grep -hsE '^URIs:.*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}')"
    if [[ -z "$uri" ]]; then
        uri="$(grep -hsE '^deb [^ ]+/debian/? ' /etc/apt/sources.list 2>/dev/null | head -n1 | awk '{print $2}')"
    fi
    printf '%s' "${uri:-http://deb.debian.org/debian}"
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

image_label() {
    docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

build_debian_base() {
    require debootstrap "apt-get install debootstrap"
    local mirror work rootfs
    mirror="${DEBIAN_MIRROR:-$(host_mirror)}"
    work="$(mktemp -d /var/tmp/whisper-base.XXXXXX)"
    # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
    trap "rm -rf '$work'" EXIT
    rootfs="$work/rootfs"

    log "debootstrap $DEBIAN_SUITE (minbase) from $mirror"
    debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

    # Same suites as an official image: release, updates and security.
    local security="${mirror%/debian*}/debian-security"
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $DEBIAN_SUITE $DEBIAN_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $DEBIAN_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

    # What makes the official image "slim": no docs, man pages or translations, no apt caches.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Install-Recommends "false";
EOF
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        log "carrying the host's local CA certificates into the image"
        mkdir -p "$rootfs/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    fi
    find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
    rm -rf "$rootfs"/usr/share/{man,info,locale}/* "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log

    log "importing as $BASE_IMAGE"
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change 'CMD ["bash"]' \
        --change "LABEL $LABEL_KIND=debootstrap-$DEBIAN_SUITE" \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$work"
    trap - EXIT
}

build_builder_base() {
    require rustc "the host's Rust toolchain is copied into the builder image"
    local sysroot version work
    sysroot="$(rustc --print sysroot)"
    version="$(rustc --version)"
    work="$(mktemp -d /var/tmp/whisper-builder.XXXXXX)"
    # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
    trap "rm -rf '$work'" EXIT

    log "copying the toolchain from $sysroot ($version), without its docs"
    mkdir -p "$work/toolchain"
    cp -a "$sysroot/bin" "$sysroot/lib" "$work/toolchain/"
    [[ -d "$sysroot/libexec" ]] && cp -a "$sysroot/libexec" "$work/toolchain/"
    cp "$BUILDER_DOCKERFILE" "$work/Dockerfile"

    log "building $BUILDER_IMAGE from $BASE_IMAGE"
    docker build --quiet \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --label "$LABEL_KIND=local-builder" \
        --label "org.whisper-api.rustc=$version" \
        -t "$BUILDER_IMAGE" "$work" >/dev/null
    rm -rf "$work"
    trap - EXIT
}

# The image to build from: our local one when it exists, else the official one when it is here
# and really official (not a local stand-in from an older version of this script).
choose() {
    local own="$1" official="$2"
    if image_exists "$own"; then printf '%s' "$own"
    elif image_exists "$official" && [[ -z "$(image_label "$official" "$LABEL_KIND")" ]]; then printf '%s' "$official"
    else printf '%s' "$own"; fi
}

print_choice() {
    printf 'RUST_IMAGE=%s\nRUNTIME_IMAGE=%s\n' "$(choose "$BUILDER_IMAGE" "$OFFICIAL_BUILDER")" \
        "$(choose "$BASE_IMAGE" "$OFFICIAL_BASE")"
}

# A local stand-in an older version of this script tagged with the official name is renamed
# (re-tagged, no rebuild: the layer caches of builds on top of it stay valid).
adopt_legacy() {
    local own="$1" official="$2"
    if ! image_exists "$own" && image_exists "$official" && [[ -n "$(image_label "$official" "$LABEL_KIND")" ]]; then
        docker tag "$official" "$own"
        log "$official here is a local stand-in: now also tagged $own (builds use that name)"
    fi
}

main() {
    [[ $PRINT -eq 1 ]] && { print_choice; return 0; }
    require docker "install Docker Engine"
    docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (is dockerd running?)"
    adopt_legacy "$BASE_IMAGE" "$OFFICIAL_BASE"
    adopt_legacy "$BUILDER_IMAGE" "$OFFICIAL_BUILDER"

    if [[ $FORCE -eq 0 ]] && [[ "$(choose "$BASE_IMAGE" "$OFFICIAL_BASE")" == "$OFFICIAL_BASE" ]]; then
        log "$OFFICIAL_BASE (official) is here; used"
    elif [[ $FORCE -eq 0 ]] && image_exists "$BASE_IMAGE"; then
        log "$BASE_IMAGE exists; kept"
    elif [[ $FORCE -eq 0 ]] && docker pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
        log "$OFFICIAL_BASE pulled from the registry; used"
    else
        build_debian_base
    fi

    local want have
    want="$(rustc --version 2>/dev/null || true)"
    have="$(image_label "$BUILDER_IMAGE" org.whisper-api.rustc)"
    if [[ $FORCE -eq 0 ]] && [[ "$(choose "$BUILDER_IMAGE" "$OFFICIAL_BUILDER")" == "$OFFICIAL_BUILDER" ]]; then
        log "$OFFICIAL_BUILDER (official) is here; used"
    elif [[ $FORCE -eq 0 ]] && image_exists "$BUILDER_IMAGE" \
        && { [[ -z "$have" ]] || [[ "$have" == "$want" ]]; }; then
        log "$BUILDER_IMAGE exists; kept"
    elif [[ $FORCE -eq 0 ]] && docker pull -q "$OFFICIAL_BUILDER" >/dev/null 2>&1; then
        log "$OFFICIAL_BUILDER pulled from the registry; used"
    else
        build_builder_base
    fi
    log "ready: $(print_choice | tr '\n' ' ')"
}

main "$@"
