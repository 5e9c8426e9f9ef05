#!/usr/bin/env bash
# test-deps.sh installs what the integration test tiers need and starts the
# daemons: real ipmitool and Debian's pyghmi for the BMC conformance tests,
# the real OpenStack client (python3-ironicclient's baremetal) against the API,
# sushy and DMTF's redfishtool against the Redfish BMC,
# headless Chromium for the browser tests of the report and the dashboard,
# PostgreSQL (the shared store of several conductors; tests start their own
# server on loopback, so the distribution's cluster is not needed),
# genisoimage, pycdlib and openstacksdk for the config drive tests (what
# Ironic builds config drives with), and the VM tier's libvirt + QEMU
# (scripts/vm-deps.sh). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"

pkgs=(ipmitool python3-pyghmi python3-ironicclient openssh-client python3-sushy redfishtool chromium curl postgresql genisoimage python3-pycdlib python3-openstacksdk)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "test-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
bash ./vm-deps.sh
