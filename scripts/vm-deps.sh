#!/usr/bin/env bash
# vm-deps.sh installs and starts what the VM tier needs: libvirt + QEMU (TCG is
# enough), the iPXE ROMs, qemu-img, ipmitool, lz4, genisoimage + isolinux
# (the agent ISO that virtual media boots) and tini (libvirtd's reaper).
# Idempotent: it installs only missing packages and starts only daemons that
# are not running, so CI and developers can call it before every test run.
set -euo pipefail

pkgs=(libvirt-daemon-system qemu-system-x86 qemu-utils ipxe-qemu ipmitool lz4 genisoimage isolinux syslinux-common tini)

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

# A new machine has no udev: /dev/kvm stays root:root 0600. libvirtd then finds
# on every call that the QEMU user (libvirt-qemu, group kvm) cannot open it,
# decides its cached QEMU capabilities are stale and probes QEMU again: each
# `virsh define` took 31-59 s. Set what udev's rule (KERNEL=="kvm", GROUP="kvm",
# MODE="0660") would, before libvirtd starts and caches anything.
if [ -e /dev/kvm ] && getent group kvm >/dev/null; then
	if [ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
		echo "vm-deps: /dev/kvm is $(stat -c '%U:%G %a' /dev/kvm); setting kvm 0660 as udev would"
		chgrp kvm /dev/kvm
		chmod 0660 /dev/kvm
	fi
fi

# This machine has no running systemd: start the daemons directly, once.
running() { pgrep -x "$1" >/dev/null 2>&1; }
if ! running virtlogd; then
	echo "vm-deps: starting virtlogd"
	virtlogd -d
fi
# Each QEMU is a daemon: when it exits, the kernel hands it to the nearest
# subreaper, else to PID 1, and libvirtd reports the domain off only once the
# process is reaped. Where PID 1 is no real init (on this kind of VM it is
# firecracker's process_api), an exited QEMU stayed a zombie for 1.5-2 s:
# every power off of a VM, the guest's own or a destroy, took that long,
# twice per deploy. libvirtd runs in the foreground under tini -s, a
# subreaper that reaps at once.
if ! running libvirtd; then
	echo "vm-deps: starting libvirtd (under tini -s, which reaps its exited QEMUs at once; log: /var/log/ironlab-libvirtd.log)"
	setsid tini -s -- libvirtd </dev/null >>/var/log/ironlab-libvirtd.log 2>&1 &
else
	ppid=$(ps -o ppid= -p "$(pgrep -xo libvirtd)" | tr -d ' ' || true)
	parent=$(ps -o comm= -p "$ppid" || true)
	init=$(ps -o comm= -p 1 || true)
	if [ "$parent" != tini ] && [ "$init" != systemd ] && [ "$init" != init ]; then
		echo "vm-deps: note: libvirtd runs without a reaper and PID 1 is $init: each VM power off waits for PID 1 to reap its QEMU (1.5-2 s here); stop libvirtd when no VM runs and run this again to start it under tini"
	fi
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
# Check that libvirt is usable, not merely running: define and undefine a
# throwaway domain twice. The first may probe QEMU once (building the
# capability cache); the second must be quick, or every test that defines a
# domain runs into its deadline.
probe_xml=$(mktemp)
trap 'rm -f "$probe_xml"' EXIT
cat >"$probe_xml" <<'XML'
<domain type='qemu'>
  <name>ironlab-deps-probe</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
</domain>
XML
virsh -q -c qemu:///system undefine ironlab-deps-probe >/dev/null 2>&1 || true
define_ms() {
	local t0 t1
	t0=$(date +%s%N)
	if ! timeout "$1" virsh -q -c qemu:///system define "$probe_xml" >/dev/null; then
		echo "vm-deps: virsh define of a throwaway domain failed or took over $1 s" >&2
		virsh -q -c qemu:///system undefine ironlab-deps-probe >/dev/null 2>&1 || true
		return 1
	fi
	t1=$(date +%s%N)
	virsh -q -c qemu:///system undefine ironlab-deps-probe >/dev/null
	echo $(((t1 - t0) / 1000000))
}
warm=$(define_ms 180) || exit 1
again=$(define_ms 30) || exit 1
if [ "$again" -gt 5000 ]; then
	cat >&2 <<MSG
vm-deps: libvirt is running but slow: defining a trivial domain took ${again} ms
after a warm-up (${warm} ms). libvirtd is re-probing QEMU on every call, so the
VM tier would time out. Usual cause: /dev/kvm permissions (now
$(stat -c '%U:%G %a' /dev/kvm 2>/dev/null || echo absent)) that change what the
QEMU user can open; set them as udev does (chgrp kvm /dev/kvm; chmod 0660
/dev/kvm), restart libvirtd, and try again.
MSG
	exit 1
fi
echo "vm-deps: libvirt define+undefine ${again} ms (first ${warm} ms)"
echo "vm-deps: ready (libvirt $(libvirtd --version | awk '{print $NF}'), $(qemu-system-x86_64 --version | head -1))"
