#!/usr/bin/env bash
# Builds, as an OCI layout tarball (or a docker save archive), the image of an OCI
# registry for running on the cluster itself (manifests/registry.yaml): Debian's
# `docker-registry` (distribution 2.8) with the libraries `ldd` says it needs and a config
# that listens on :5000 and keeps its data under /var/lib/registry. No registry and no
# Docker are needed to build it: umoci makes the image, skopeo writes the archive
# (both installed by hack/setup.sh).
#
#   hack/build-registry-image.sh [-o FILE] [--name NAME] [--format oci|docker]
#       the registry image (default: registry-image.tar, minik8s.local/registry:2.8)
#   hack/build-registry-image.sh --hello [-o FILE] [--name NAME] [--format oci|docker]
#       a small busybox-static web server to push to it (default: hello-image.tar,
#       minik8s.local/hello:v1): `httpd` on :8080 serving "hello from <hostname>"
#
# Then: `minik8s image import FILE` (the README's "A registry on the cluster" walks through
# the rest). The archive names the image (an OCI ref name, or docker save's RepoTags), so
# the import needs no --base-name.
set -euo pipefail

what=registry
out=""
name=""
format=oci
while [ $# -gt 0 ]; do
    case "$1" in
        --hello) what=hello ;;
        -o|--output) out="$2"; shift ;;
        --name) name="$2"; shift ;;
        --format) format="$2"; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-registry-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$format" in
    oci) transport=oci-archive ;;
    docker) transport=docker-archive ;;
    *) echo "build-registry-image.sh: --format must be oci or docker, not $format" >&2; exit 2 ;;
esac
if [ "$what" = registry ]; then
    out="${out:-registry-image.tar}"; name="${name:-minik8s.local/registry:2.8}"
    binary=/usr/bin/docker-registry; need="docker-registry (apt-get install docker-registry)"
else
    out="${out:-hello-image.tar}"; name="${name:-minik8s.local/hello:v1}"
    binary=/bin/busybox; need="busybox-static (apt-get install busybox-static)"
fi
for tool in umoci skopeo; do
    command -v "$tool" >/dev/null || { echo "build-registry-image.sh: $tool is missing (hack/setup.sh installs it)" >&2; exit 1; }
done
[ -x "$binary" ] || { echo "build-registry-image.sh: $binary is missing: install $need" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/minik8s-image-XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{etc,tmp,bin}
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n' > "$root/etc/hosts"

# The binary, and every library `ldd` names (a static binary has none), at the same
# paths, so its ELF interpreter and the loader's search path find them.
copy_with_libs() {
    cp -L --parents "$1" "$root"
    # ldd prints "name => /path (addr)" and "/path/of/ld.so (addr)"; a static binary
    # makes it say "not a dynamic executable" and exit 1.
    ldd "$1" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
        [ -e "$lib" ] && cp -L --parents "$lib" "$root"
    done || true
}
copy_with_libs "$binary"

if [ "$what" = registry ]; then
    mkdir -p "$root/etc/docker/registry" "$root/var/lib/registry"
    cat > "$root/etc/docker/registry/config.yml" <<'EOF'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
EOF
    config=(--config.workingdir / --config.entrypoint /usr/bin/docker-registry
            --config.cmd serve --config.cmd /etc/docker/registry/config.yml
            --config.exposedports 5000/tcp --config.volume /var/lib/registry)
else
    for applet in sh httpd hostname cat echo ls; do ln -sf busybox "$root/bin/$applet"; done
    mkdir -p "$root/www"
    # sh stays PID 1 with a TERM trap: PID 1 gets no signal it has no handler for, and
    # httpd has none, so `exec httpd` would sit out the whole grace period of a delete;
    # when sh exits, the kernel kills httpd with the rest of the PID namespace.
    config=(--config.env PATH=/bin --config.workingdir /www
            --config.entrypoint /bin/sh --config.entrypoint -c
            --config.cmd 'echo "hello from $(hostname)" > /www/index.html || exit 1; trap "exit 0" TERM; httpd -f -v -p 8080 -h /www & wait'
            --config.exposedports 8080/tcp)
fi

layout="$work/layout"
umoci init --layout "$layout"
umoci new --image "$layout:image"
# Not root: the files are recorded as root's anyway (umoci's rootless mode).
rootless=(); [ "$(id -u)" = 0 ] || rootless=(--rootless)
umoci insert "${rootless[@]}" --image "$layout:image" "$root" / >/dev/null
umoci config --image "$layout:image" --author "minik8s hack/build-registry-image.sh" "${config[@]}"
umoci gc --layout "$layout"
rm -f "$out"
skopeo copy --quiet "oci:$layout:image" "$transport:$out:$name"
echo "wrote $out ($name, $format archive); next: minik8s image import $out"
