#!/usr/bin/env bash
# test-deps.sh installs what the integration test tiers need and starts the
# daemons: real ipmitool and Debian's pyghmi for the BMC conformance tests,
# the real OpenStack client (python3-ironicclient's baremetal) against the API,
# sushy and DMTF's redfishtool against the Redfish BMC,
# headless Chromium for the browser tests of the report and the dashboard,
# PostgreSQL (the shared store of several conductors; tests start their own
# server on loopback, so the distribution's cluster is not needed),
# genisoimage, pycdlib and openstacksdk for the config drive tests (what
# Ironic builds config drives with), Debian's docker.io and a running dockerd
# for the container matrix (conductors in containers, cmd/ironlab's
# dockertest tests), Debian's Ironic 21.4 for `ironlab bench --compare`'s
# test (scripts/ironic.sh install; the interop tier uses the same), and the
# VM tier's libvirt + QEMU (scripts/vm-deps.sh).
# Idempotent: installs only what is missing, starts only what is not running.
set -euo pipefail
cd "$(dirname "$0")"

pkgs=(ipmitool python3-pyghmi python3-ironicclient openssh-client python3-sushy redfishtool chromium curl postgresql genisoimage python3-pycdlib python3-openstacksdk docker.io)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "test-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# No package starts a service while it installs (policy-rc.d says 101,
	# as in Debian's container images): docker.io's would be a dockerd with
	# a bridge and iptables NAT. This script starts what the tests need.
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# test-deps.sh: no service starts during its install\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		trap 'rm -f "$policy"' EXIT
	fi
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if grep -q '^# test-deps.sh:' "$policy" 2>/dev/null; then
		rm -f "$policy"
		trap - EXIT
	fi
fi

# dockerd: this machine has no systemd (and fresh-check.sh stops dockerd to
# emulate a new machine), so start it here. No bridge and no iptables: the
# containers use host networking on loopback only, and no registry is
# reachable (the tests build their images FROM scratch).
docker_sock=/var/run/docker.sock
docker_up() { timeout 5 /usr/bin/docker -H "unix://$docker_sock" version --format '{{.Server.Version}}' >/dev/null 2>&1; }
log=/var/log/ironlab-dockerd.log
if ! docker_up; then
	# A dockerd that does not answer may be one still shutting down (as
	# fresh-check.sh leaves it): wait, and start a new one once it is gone.
	pgrep -x dockerd >/dev/null && echo "test-deps: dockerd is running but $docker_sock does not answer; waiting for it (or for it to exit)"
	for _ in $(seq 1 90); do
		docker_up && break
		if ! pgrep -x dockerd >/dev/null; then
			echo "test-deps: starting dockerd (log: $log)"
			rm -f "$docker_sock"
			setsid /usr/sbin/dockerd --bridge=none --iptables=false --ip6tables=false </dev/null >>"$log" 2>&1 &
			sleep 0.5
		fi
		sleep 0.5
	done
	if ! docker_up; then
		echo "test-deps: dockerd did not answer on $docker_sock within 60 s; its log:" >&2
		tail -n 30 "$log" >&2 || true
		exit 1
	fi
fi
echo "test-deps: docker engine $(/usr/bin/docker -H "unix://$docker_sock" version --format '{{.Server.Version}}') ready"

# cmd/ironlab's TestBenchCompareMeasuresThePeers runs a real Ironic.
bash ./ironic.sh install

bash ./vm-deps.sh
