#!/usr/bin/env bash
# vm-deps.sh installs and starts what the VM tier needs: libvirt + QEMU (TCG is
# enough), the iPXE ROMs, qemu-img, ipmitool and lz4. Idempotent: it installs
# only missing packages and starts only daemons that are not running, so CI and
# developers can call it before every test run.
set -euo pipefail

pkgs=(libvirt-daemon-system qemu-system-x86 qemu-utils ipxe-qemu ipmitool lz4)

if [ "$(id -u)" -ne 0 ]; then
	echo "vm-deps: must run as root (installs Debian packages, starts libvirtd)" >&2
	exit 1
fi

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "vm-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# No recommends: we need neither dnsmasq nor the default NAT network.
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# This machine has no running systemd: start the daemons directly, once.
running() { pgrep -x "$1" >/dev/null 2>&1; }
if ! running virtlogd; then
	echo "vm-deps: starting virtlogd"
	virtlogd -d
fi
if ! running libvirtd; then
	echo "vm-deps: starting libvirtd"
	libvirtd -d
fi

# Wait for the socket so callers can connect right away.
for _ in $(seq 1 50); do
	[ -S /run/libvirt/libvirt-sock ] && break
	sleep 0.1
done
if [ ! -S /run/libvirt/libvirt-sock ]; then
	echo "vm-deps: libvirtd did not create /run/libvirt/libvirt-sock" >&2
	exit 1
fi
echo "vm-deps: ready (libvirt $(libvirtd --version | awk '{print $NF}'), $(qemu-system-x86_64 --version | head -1))"
