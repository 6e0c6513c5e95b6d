#!/usr/bin/env bash
# Builds a local Debian bookworm base image with PostgreSQL 15, HAProxy and
# tini, for machines where no image can be pulled. It bootstraps a root file
# system with debootstrap from this machine's own apt mirror (read from its
# apt sources) and imports it with `docker import`.
#
#   compose/base-image.sh            build it unless an image with the tag exists
#   compose/base-image.sh --rebuild  build it again
#
# The tag is $PGPILOT_BASE_IMAGE (default pgpilot-base:bookworm-pg15); pass it
# to the lab as the BASE_IMAGE build argument (compose/drill.sh does).
set -euo pipefail

tag=${PGPILOT_BASE_IMAGE:-pgpilot-base:bookworm-pg15}
rebuild=0
for arg in "$@"; do
  case "$arg" in
    --rebuild) rebuild=1 ;;
    *) echo "error: unknown argument $arg: the only option is --rebuild" >&2; exit 2 ;;
  esac
done

if [ "$rebuild" -eq 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag exists (compose/base-image.sh --rebuild builds it again)"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# The mirror serving bookworm main on this machine: deb822 sources first,
# then one-line sources.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '
    function flush() { if (uri != "" && suites ~ /(^| )bookworm( |$)/ && comps ~ /(^| )main( |$)/ && found == "") found = uri }
    /^[[:space:]]*$/ { flush(); uri = ""; suites = ""; comps = ""; next }
    /^URIs:/ { uri = $2 }
    /^Suites:/ { $1 = ""; suites = $0 " " }
    /^Components:/ { $1 = ""; comps = $0 " " }
    END { flush(); print found }' "$f")
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ]; then
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' "$f")
    [ -n "$mirror" ] && break
  done
fi
if [ -z "$mirror" ]; then
  echo "error: no apt source for Debian bookworm main found in /etc/apt/sources.list*: add one, or build the lab from a public base image (see README, The docker compose lab)" >&2
  exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "installing debootstrap ..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap >/dev/null
fi

root=$(mktemp -d /tmp/pgpilot-base.XXXXXX)
cleanup() { $sudo rm -rf "$root"; }
trap cleanup EXIT

start=$(date +%s)
echo "bootstrapping Debian bookworm into $root from $mirror ..."
if ! $sudo debootstrap --variant=minbase --include=ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1; then
  tail -n 30 "$root.log" >&2
  echo "error: debootstrap failed (log above, full log in $root.log): check that $mirror is reachable" >&2
  exit 1
fi
# Nothing installed in the chroot may start a service, and Debian's
# postgresql-common must not create its "main" cluster: the keeper runs its
# own initdb.
printf '#!/bin/sh\nexit 101\n' | $sudo tee "$root/usr/sbin/policy-rc.d" >/dev/null
$sudo chmod 755 "$root/usr/sbin/policy-rc.d"
$sudo mkdir -p "$root/etc/postgresql-common"
echo "create_main_cluster = false" | $sudo tee "$root/etc/postgresql-common/createcluster.conf" >/dev/null
$sudo cp /etc/resolv.conf "$root/etc/resolv.conf"
echo "installing PostgreSQL 15, HAProxy and tini ..."
if ! $sudo chroot "$root" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 haproxy tini' >"$root.log" 2>&1; then
  tail -n 30 "$root.log" >&2
  echo "error: installing packages in the base image failed (log above, full log in $root.log)" >&2
  exit 1
fi
$sudo chroot "$root" apt-get clean
rm -f "$root.log"

# Remove caches, documentation and manual pages.
$sudo rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/var/log/*.log "$root"/tmp/*
# Files a container gets from the engine; the service guard (images built
# from this one install nothing that starts services).
$sudo rm -f "$root"/etc/hostname "$root"/etc/resolv.conf "$root"/usr/sbin/policy-rc.d

$sudo tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  - "$tag" >/dev/null
echo "base image $tag built in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
