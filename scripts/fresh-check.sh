#!/usr/bin/env bash
# fresh-check.sh puts this machine back into the state of a new machine, in the
# ways that have broken CI before, then runs `.ci/run` the way CI does: in a
# fresh clone of the committed HEAD, as root, with CI=true and no stdin.
#
# What "new machine" means here (each of these hid a failure once):
#   - /dev/kvm is root:root 0600 (no udev), so libvirtd re-probes QEMU on every
#     call until the deps step fixes the permissions;
#   - libvirt's QEMU capability cache is empty and libvirtd/virtlogd are not running;
#   - the project's own daemons (PostgreSQL, dockerd, Ironic) are not running;
#   - ~/.cache/ironlab (guest kernel, agent ramdisk, images) is empty.
# Installed Debian packages stay (removing them is --purge); the Go build cache
# stays unless --cold.
#
# Usage: scripts/fresh-check.sh [--cold] [--purge] [--keep DIR]
#   --cold    use an empty GOCACHE (a new machine compiles everything)
#   --purge   also apt-get purge the packages the test tiers install
#   --keep    clone into DIR and keep it afterwards (default: a temp dir, removed)
set -euo pipefail

cold=0 purge=0 keep=""
while [ $# -gt 0 ]; do
	case "$1" in
	--cold) cold=1 ;;
	--purge) purge=1 ;;
	--keep) keep="$2"; shift ;;
	-h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "fresh-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
if [ "$(id -u)" -ne 0 ]; then
	echo "fresh-check: must run as root (it stops libvirtd and resets /dev/kvm)" >&2
	exit 1
fi

repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
head=$(git -C "$repo" rev-parse --short HEAD)
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
	echo "fresh-check: note: uncommitted changes in $repo are not checked (CI sees commits only)"
fi

echo "fresh-check: resetting this machine to the new-machine state"
# Leftover lab domains from earlier runs would make the first run differ.
if command -v virsh >/dev/null && pgrep -x libvirtd >/dev/null; then
	for d in $(timeout 20 virsh -q -c qemu:///system list --all --name 2>/dev/null | grep '^ironlab-' || true); do
		timeout 20 virsh -q -c qemu:///system destroy "$d" >/dev/null 2>&1 || true
		timeout 20 virsh -q -c qemu:///system undefine --nvram "$d" >/dev/null 2>&1 ||
			timeout 20 virsh -q -c qemu:///system undefine "$d" >/dev/null 2>&1 || true
	done
fi
# pgrep/pkill -x match at most 15 characters of a process name, so
# ironic-conductor goes by its command line.
daemons="libvirtd virtlogd virtlockd dockerd containerd ironic-api"
for p in $daemons; do
	pkill -x "$p" 2>/dev/null || true
done
pkill -f 'bin/ironic-conductor' 2>/dev/null || true
# PostgreSQL servers the tests started from their own data folders.
pkill -f 'postgres .*-D' 2>/dev/null || true
# Wait for them to exit (dockerd takes seconds to shut down; one still going
# is not what a new machine has), then kill what is left.
for _ in $(seq 1 150); do
	left=0
	for p in $daemons; do
		# One name at a time: an alternation of all of them is longer
		# than 15 characters, and pgrep matched nothing.
		pgrep -x "$p" >/dev/null && left=1
	done
	pgrep -f 'bin/ironic-conductor' >/dev/null && left=1
	[ "$left" = 1 ] || break
	sleep 0.1
done
for p in $daemons; do
	pkill -9 -x "$p" 2>/dev/null || true
done
pkill -9 -f 'bin/ironic-conductor' 2>/dev/null || true
rm -f /var/run/docker.sock
rm -f /run/libvirt/libvirt-sock /run/libvirtd.pid
if [ -e /dev/kvm ]; then
	chown root:root /dev/kvm
	chmod 0600 /dev/kvm
fi
rm -rf /var/cache/libvirt/qemu/capabilities
rm -rf "${HOME:-/root}/.cache/ironlab"

if [ "$purge" = 1 ]; then
	echo "fresh-check: purging the test tiers' packages"
	# Every package test-deps.sh, vm-deps.sh and ironic.sh install.
	DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq ipmitool python3-pyghmi python3-ironicclient \
		python3-sushy redfishtool chromium postgresql genisoimage python3-pycdlib python3-openstacksdk docker.io \
		ironic-api ironic-conductor python3-psycopg2 isolinux syslinux-common \
		libvirt-daemon-system qemu-system-x86 qemu-utils ipxe-qemu lz4 >/dev/null || true
	DEBIAN_FRONTEND=noninteractive apt-get autoremove -y -qq >/dev/null || true
fi

work=${keep:-$(mktemp -d /tmp/ironlab-fresh.XXXXXX)}
mkdir -p "$work"
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT
rm -rf "$work/main"
git clone -q "$repo" "$work/main"
# CI lays a read-only copy of shared/ beside the clone.
if [ -d "$repo/../shared" ]; then
	cp -r "$repo/../shared" "$work/shared"
	chmod -R a-w "$work/shared"
fi

envs=(CI=true)
if [ "$cold" = 1 ]; then
	envs+=(GOCACHE="$work/gocache")
fi
echo "fresh-check: running .ci/run in $work/main at $head ($(date -u +%H:%M:%S))"
start=$(date +%s)
rc=0
(cd "$work/main" && env "${envs[@]}" bash .ci/run </dev/null) || rc=$?
took=$(($(date +%s) - start))
if [ "$rc" = 0 ]; then
	echo "fresh-check: PASS at $head in ${took}s"
else
	echo "fresh-check: FAIL (exit $rc) at $head after ${took}s" >&2
fi
[ -z "$keep" ] || chmod -R u+w "$work/shared" 2>/dev/null || true
exit "$rc"
