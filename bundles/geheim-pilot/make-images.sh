#!/bin/sh
# Build the two GEHEIM pilot images OFFLINE, deterministically, from Debian's
# static busybox, into a local OCI layout; optionally push them into a registry.
#
#   make-images.sh LAYOUT                       build only
#   make-images.sh LAYOUT HOST:PORT             build, then push with skopeo
#                                               (plain HTTP / no TLS verification)
#
# LAYOUT gets five tags:    status-1.0 status-1.1 notes-1.0 notes-1.1 pause-1.0
# pushed as:                HOST:PORT/pilot/status:1.0 ... HOST:PORT/pilot/notes:1.1,
#                           HOST:PORT/pilot/pause:1.0 (the pods' infra image)
#
# Each image has two layers: a shared base layer (/bin/busybox, a few applet
# links, /etc/passwd and /etc/group) and an application layer (/www).  1.1
# differs from 1.0 in the application layer only, so the base layer is shared
# by all four images.  Same busybox binary + same sources => same digests:
# every mtime, owner, creation time and history entry is fixed.
#
# Environment:
#   BUSYBOX        busybox binary to use (default /bin/busybox; must be static)
#   UMOCI, SKOPEO  tool paths (default: from PATH)
set -eu
umask 022
export LC_ALL=C TZ=UTC

usage() { echo "usage: $0 LAYOUT [REGISTRY_HOST:PORT]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
LAYOUT=$1
REGISTRY=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$HERE/image-src
BUSYBOX=${BUSYBOX:-/bin/busybox}
UMOCI=${UMOCI:-umoci}
SKOPEO=${SKOPEO:-skopeo}

# Fixed times: the base layer and 1.0 on 2025-01-01, 1.1 on 2025-02-01.
BASE_EPOCH=1735689600
BASE_CREATED=2025-01-01T00:00:00Z
created_for() { case $1 in 1.0) echo 2025-01-01T00:00:00Z ;; 1.1) echo 2025-02-01T00:00:00Z ;; esac; }
epoch_for()   { case $1 in 1.0) echo 1735689600 ;; 1.1) echo 1738368000 ;; esac; }
VERSIONS="1.0 1.1"
APPS="status notes"

[ -x "$BUSYBOX" ] || { echo "$0: $BUSYBOX not found (apt-get install busybox-static)" >&2; exit 1; }
if command -v file >/dev/null 2>&1 && ! file -L "$BUSYBOX" | grep -q 'statically linked'; then
    echo "$0: $BUSYBOX is not statically linked (install busybox-static)" >&2; exit 1
fi
if [ -e "$LAYOUT" ]; then
    echo "$0: $LAYOUT already exists; give a new directory" >&2; exit 1
fi

ROOTLESS=""
[ "$(id -u)" -eq 0 ] || ROOTLESS="--rootless"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/make-images.XXXXXX")
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT INT TERM

# Pin every timestamp below $1 and make ownership root (when we can).
pin() {
    find "$1" -exec touch -h -d "@$2" {} +
    [ -n "$ROOTLESS" ] || chown -hR 0:0 "$1"
}

# Fill in a placeholder-free copy of an application's /www.
stage_app() { # app version dest
    mkdir -p "$3"
    cp -R "$SRC/$1/www" "$3/www"
    find "$3/www" -type f | while read -r f; do
        sed "s/@VERSION@/$2/g" "$f" > "$f.tmp" && mv "$f.tmp" "$f"
    done
    find "$3/www" -type d -exec chmod 0755 {} +
    find "$3/www" -type f -exec chmod 0644 {} +
    find "$3/www/cgi-bin" -type f -exec chmod 0755 {} +
}

"$UMOCI" init --layout "$LAYOUT"

# --- base: busybox + passwd, one layer ------------------------------------
"$UMOCI" new --image "$LAYOUT:base"
"$UMOCI" unpack $ROOTLESS --image "$LAYOUT:base" "$WORK/base"
R=$WORK/base/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/tmp"
chmod 1777 "$R/tmp"
cp "$BUSYBOX" "$R/bin/busybox"
chmod 0755 "$R/bin/busybox"
for applet in sh httpd cat date echo hostname id ls ps sleep uptime wget; do
    ln -s busybox "$R/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$R/etc/group"
chmod 0644 "$R/etc/passwd" "$R/etc/group"
pin "$R" "$BASE_EPOCH"
"$UMOCI" repack --image "$LAYOUT:base" \
    --history.created "$BASE_CREATED" --history.author "airgap geheim-pilot" \
    --history.created_by "make-images.sh: busybox $("$BUSYBOX" 2>&1 | head -n 1 | cut -d' ' -f2)" \
    "$WORK/base"

# --- applications: base + /www, one layer each --------------------------------
for app in $APPS; do
    for version in $VERSIONS; do
        tag=$app-$version
        created=$(created_for "$version")
        port=8080; [ "$app" = notes ] && port=8081
        "$UMOCI" tag --image "$LAYOUT:base" "$tag"
        "$UMOCI" unpack $ROOTLESS --image "$LAYOUT:$tag" "$WORK/$tag"
        stage_app "$app" "$version" "$WORK/$tag/stage"
        cp -R "$WORK/$tag/stage/www" "$WORK/$tag/rootfs/www"
        pin "$WORK/$tag/rootfs/www" "$(epoch_for "$version")"
        touch -h -d "@$BASE_EPOCH" "$WORK/$tag/rootfs"   # adding /www touched /
        "$UMOCI" repack --image "$LAYOUT:$tag" \
            --history.created "$created" --history.author "airgap geheim-pilot" \
            --history.created_by "make-images.sh: pilot/$app $version /www" \
            "$WORK/$tag"
        "$UMOCI" config --image "$LAYOUT:$tag" --no-history \
            --created "$created" --author "airgap geheim-pilot" \
            --architecture amd64 --os linux \
            --config.user 65534:65534 \
            --config.workingdir /www \
            --config.env PATH=/bin \
            --config.entrypoint /bin/busybox --config.entrypoint httpd \
            --config.entrypoint -f --config.entrypoint -v \
            --config.entrypoint -h --config.entrypoint /www \
            --config.cmd -p --config.cmd "$port" \
            --config.exposedports "$port/tcp" \
            --config.stopsignal SIGTERM \
            --config.label "org.opencontainers.image.title=pilot/$app" \
            --config.label "org.opencontainers.image.version=$version" \
            --config.label "org.opencontainers.image.created=$created" \
            --config.label "org.opencontainers.image.description=GEHEIM pilot $app page (busybox httpd on port $port)" \
            --config.label "org.opencontainers.image.vendor=airgap geheim-pilot" \
            --config.label "org.opencontainers.image.licenses=GPL-2.0-only" \
            --config.label "org.opencontainers.image.base.name=scratch"
    done
done

# --- pause: the pods' infra (sandbox) image, base + /pause -----------------------
# podman (infra_image) and containerd (sandbox_image) hold a pod's namespaces with
# it; it must come from the internal registry like every other image.
"$UMOCI" tag --image "$LAYOUT:base" pause-1.0
"$UMOCI" unpack $ROOTLESS --image "$LAYOUT:pause-1.0" "$WORK/pause-1.0"
printf '#!/bin/sh\n# The pod infra process: hold the namespaces, exit on TERM or INT.\ntrap "exit 0" TERM INT\nwhile :; do sleep 3600 & wait $!; done\n' \
    > "$WORK/pause-1.0/rootfs/pause"
chmod 0755 "$WORK/pause-1.0/rootfs/pause"
pin "$WORK/pause-1.0/rootfs/pause" "$BASE_EPOCH"
touch -h -d "@$BASE_EPOCH" "$WORK/pause-1.0/rootfs"
"$UMOCI" repack --image "$LAYOUT:pause-1.0" \
    --history.created "$BASE_CREATED" --history.author "airgap geheim-pilot" \
    --history.created_by "make-images.sh: pilot/pause 1.0 /pause" \
    "$WORK/pause-1.0"
"$UMOCI" config --image "$LAYOUT:pause-1.0" --no-history \
    --created "$BASE_CREATED" --author "airgap geheim-pilot" \
    --architecture amd64 --os linux \
    --config.user 65534:65534 \
    --config.env PATH=/bin \
    --config.entrypoint /pause \
    --config.stopsignal SIGTERM \
    --config.label "org.opencontainers.image.title=pilot/pause" \
    --config.label "org.opencontainers.image.version=1.0" \
    --config.label "org.opencontainers.image.created=$BASE_CREATED" \
    --config.label "org.opencontainers.image.description=GEHEIM pilot pod infra (pause) image" \
    --config.label "org.opencontainers.image.vendor=airgap geheim-pilot" \
    --config.label "org.opencontainers.image.licenses=GPL-2.0-only" \
    --config.label "org.opencontainers.image.base.name=scratch"

"$UMOCI" rm --image "$LAYOUT:base"
"$UMOCI" gc --layout "$LAYOUT"

for tag in $(for app in $APPS; do for version in $VERSIONS; do echo "$app-$version"; done; done) pause-1.0; do
    digest=$(sed 's/},{/}\n{/g' "$LAYOUT/index.json" | grep "\"org.opencontainers.image.ref.name\":\"$tag\"" \
             | sed 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/')
    echo "$LAYOUT:$tag $digest"
done

# --- push ------------------------------------------------------------------------
if [ -n "$REGISTRY" ]; then
    for tag in $(for app in $APPS; do for version in $VERSIONS; do echo "$app-$version"; done; done) pause-1.0; do
        "$SKOPEO" copy --quiet --preserve-digests \
            --dest-tls-verify=false \
            "oci:$LAYOUT:$tag" "docker://$REGISTRY/pilot/${tag%-*}:${tag##*-}"
        echo "pushed $REGISTRY/pilot/${tag%-*}:${tag##*-}"
    done
fi
