#!/usr/bin/env bash
# ironic.sh runs Debian's OpenStack Ironic (ironic-api + ironic-conductor) as
# a standalone peer for ironlab on loopback: noauth, PostgreSQL (or SQLite), json-rpc, no DHCP,
# started by PID from a state folder of its own (never as a system service).
#
# Usage:
#   scripts/ironic.sh install              apt-get install ironic-api ironic-conductor python3-ironicclient
#                                          without starting their system services
#   scripts/ironic.sh start DIR [options]  write DIR/ironic.conf, create the schema, start both, wait for the API
#   scripts/ironic.sh stop DIR             stop what start started (by PID)
# Options of start:
#   --api-port N       API port on 127.0.0.1 (default 6388)
#   --rpc-port N       json-rpc port on 127.0.0.1 (default 8089)
#   --require-tls      [agent]require_tls = True (Ironic 2024.2's default): agents must call back over https
#   --callback-timeout S  deploy/clean call-back timeout in seconds (default 120)
#   --http-port N      port on 127.0.0.1 of the web server start runs for [deploy]http_root
#                      (default 8087): redfish-virtual-media's boot ISOs are fetched from it
#   --db postgresql|sqlite  Ironic's database (default postgresql: a throw-away cluster of
#                      Debian's PostgreSQL on a unix socket, no TCP; sqlite: a file, which
#                      API and conductor lock each other out of under load)
# After start: export OS_AUTH_TYPE=none OS_ENDPOINT=http://127.0.0.1:<api-port>
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

cmd=${1:-}
case "$cmd" in
-h | --help | "") usage; [ -n "$cmd" ]; exit $? ;;
install)
	# genisoimage, isolinux, syslinux-common: redfish-virtual-media builds its boot ISO with them.
	# postgresql, python3-psycopg2: Ironic's database (--db postgresql).
	pkgs=(ironic-api ironic-conductor python3-ironicclient ipmitool genisoimage isolinux syslinux-common postgresql python3-psycopg2)
	missing=()
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
	done
	[ "${#missing[@]}" -eq 0 ] && exit 0
	echo "ironic.sh: installing ${missing[*]} (their services are not started)"
	export DEBIAN_FRONTEND=noninteractive
	# policy-rc.d 101: maintainer scripts may not start services; we start by PID.
	had_policy=0
	[ -e /usr/sbin/policy-rc.d ] && had_policy=1
	if [ "$had_policy" = 0 ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
	fi
	rc=0
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
		apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	} || rc=$?
	[ "$had_policy" = 1 ] || rm -f /usr/sbin/policy-rc.d
	# Debian's packages may still have started something: stop it, we run our own.
	pkill -x ironic-api 2>/dev/null || true
	pkill -f 'bin/ironic-conductor' 2>/dev/null || true # -x sees 15 characters of a name
	exit "$rc"
	;;
start | stop) ;;
*) echo "ironic.sh: unknown command $cmd (see --help)" >&2; exit 2 ;;
esac

dir=${2:?"ironic.sh $cmd: give the state folder"}
shift 2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

# stop_all stops what start started, by the PIDs it wrote: each was started
# with setsid, so its PID is its process group's, which holds its workers too
# (ironic-api forks some).
stop_all() {
	for n in api conductor http; do
		f="$dir/$n.pid"
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		if kill -- "-$pid" 2>/dev/null; then
			for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
			kill -9 -- "-$pid" 2>/dev/null || true
		fi
		rm -f "$f"
	done
	# The PostgreSQL cluster (--db postgresql): pg_ctl stops it by its PID file.
	if [ -f "$dir/pg.dir" ]; then
		pg=$(cat "$dir/pg.dir")
		if [ -d "$pg/data" ]; then
			runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$pg/data" -m immediate -w stop >/dev/null 2>&1 || true
		fi
		case "$pg" in /tmp/ironic-pg.*) rm -rf "$pg" ;; esac
		rm -f "$dir/pg.dir"
	fi
}
if [ "$cmd" = stop ]; then
	stop_all
	exit 0
fi

api_port=6388 rpc_port=8089 http_port=8087 require_tls=False cb=120 db=postgresql
while [ $# -gt 0 ]; do
	case "$1" in
	--api-port) api_port=$2; shift ;;
	--rpc-port) rpc_port=$2; shift ;;
	--require-tls) require_tls=True ;;
	--callback-timeout) cb=$2; shift ;;
	--http-port) http_port=$2; shift ;;
	--db) db=$2; shift ;;
	*) echo "ironic.sh start: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
case "$db" in
postgresql | sqlite) ;;
*) echo "ironic.sh start: --db $db: want postgresql or sqlite" >&2; exit 2 ;;
esac
for t in ironic-api ironic-conductor ironic-dbsync; do
	command -v "$t" >/dev/null || { echo "ironic.sh: $t not found: run scripts/ironic.sh install" >&2; exit 1; }
done

mkdir -p "$dir"/{certificates,tftpboot/master_images,httpboot,images,master_images,lock,tmp,log}
cat >"$dir/ironic.conf" <<CONF
[DEFAULT]
host = 127.0.0.1
# Debian's isolinux package puts it here (Ironic looks in /usr/lib/syslinux);
# ldlinux.c32 is found in syslinux-common's /usr/lib/syslinux/modules/bios.
isolinux_bin = /usr/lib/ISOLINUX/isolinux.bin
auth_strategy = noauth
rpc_transport = json-rpc
state_path = $dir
tempdir = $dir/tmp
log_dir = $dir/log
use_stderr = false
debug = true
enabled_hardware_types = ipmi,redfish,fake-hardware,manual-management
enabled_boot_interfaces = pxe,ipxe,redfish-virtual-media,fake
enabled_deploy_interfaces = direct,fake
enabled_power_interfaces = ipmitool,redfish,fake
enabled_management_interfaces = ipmitool,redfish,noop,fake
enabled_inspect_interfaces = no-inspect
enabled_network_interfaces = noop
default_network_interface = noop
enabled_console_interfaces = no-console
enabled_vendor_interfaces = ipmitool,redfish,no-vendor
enabled_raid_interfaces = agent,no-raid
enabled_rescue_interfaces = agent,no-rescue
enabled_bios_interfaces = redfish,no-bios
enabled_firmware_interfaces = no-firmware

[api]
host_ip = 127.0.0.1
port = $api_port
# Sent to agents at lookup; IPA heartbeats every 0.3-0.6 of it (300 s: ~2 min per clean step).
ramdisk_heartbeat_timeout = 10

[json_rpc]
auth_strategy = noauth
host_ip = 127.0.0.1
port = $rpc_port

[service_catalog]
# The URL agents are told to call back (ipa-api-url); no keystone here.
endpoint_override = http://127.0.0.1:$api_port

[database]
connection = @CONNECTION@

[dhcp]
dhcp_provider = none

[conductor]
automated_clean = true
deploy_callback_timeout = $cb
clean_callback_timeout = $cb
check_provision_state_interval = 5
sync_power_state_interval = 30
heartbeat_interval = 5

[agent]
require_tls = $require_tls
# Ironic keeps each agent's auto-TLS certificate as <path>/<node uuid>.crt,
# by default in /var/lib/ironic/certificates: two Ironics on one machine with
# nodes of the same UUIDs (the same lab seed) would verify with each other's.
certificates_path = $dir/certificates
post_deploy_get_power_state_retry_interval = 1
deploy_logs_collect = never

[deploy]
http_root = $dir/httpboot
# redfish-virtual-media puts each node's boot ISO here; the web server start
# runs serves it to the BMC (the lab's fake machine fetches it).
http_url = http://127.0.0.1:$http_port
default_boot_mode = bios
fast_track = false
shred_random_overwrite_iterations = 0

[pxe]
tftp_root = $dir/tftpboot
tftp_master_path = $dir/tftpboot/master_images
images_path = $dir/images
instance_master_path = $dir/master_images

[redfish]
# No swift here: the boot ISOs are served from [deploy]http_root.
use_swift = false

[ipmi]
min_command_interval = 1
command_retry_timeout = 30

[oslo_concurrency]
lock_path = $dir/lock
CONF

if [ "$db" = postgresql ]; then
	# A cluster of its own, owned by the postgres user (PostgreSQL refuses to
	# run as root) in a folder that user can reach, listening on a unix
	# socket only; trust auth on it. stop_all stops and removes it.
	[ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] && id postgres >/dev/null 2>&1 ||
		{ echo "ironic.sh: PostgreSQL not found: run scripts/ironic.sh install (or --db sqlite)" >&2; exit 1; }
	if [ -f "$dir/pg.dir" ]; then stop_all; fi
	pg=$(mktemp -d /tmp/ironic-pg.XXXXXX)
	echo "$pg" >"$dir/pg.dir"
	chown postgres "$pg"
	runuser -u postgres -- "$(pg_bin)/initdb" -D "$pg/data" -A trust -U postgres >"$dir/log/initdb.log" 2>&1 ||
		{ echo "ironic.sh: initdb failed, see $dir/log/initdb.log" >&2; stop_all; exit 1; }
	runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" -w -t 60 \
		-o "-c listen_addresses='' -k $pg -c fsync=off -c synchronous_commit=off" start >"$dir/log/pg_ctl.log" 2>&1 ||
		{ echo "ironic.sh: PostgreSQL did not start, see $pg/postgres.log" >&2; tail -5 "$pg/postgres.log" >&2; stop_all; exit 1; }
	runuser -u postgres -- "$(pg_bin)/createdb" -h "$pg" ironic >>"$dir/log/pg_ctl.log" 2>&1 ||
		{ echo "ironic.sh: createdb ironic failed, see $dir/log/pg_ctl.log" >&2; stop_all; exit 1; }
	sed -i "s|@CONNECTION@|postgresql+psycopg2://postgres@/ironic?host=$pg|" "$dir/ironic.conf"
	ironic-dbsync --config-file "$dir/ironic.conf" create_schema >"$dir/log/dbsync.log" 2>&1 || {
		echo "ironic.sh: ironic-dbsync create_schema failed, see $dir/log/dbsync.log" >&2; tail -5 "$dir/log/dbsync.log" >&2; stop_all; exit 1; }
else
	sed -i "s|@CONNECTION@|sqlite:///$dir/ironic.sqlite|" "$dir/ironic.conf"
fi
if [ "$db" = sqlite ] && [ ! -f "$dir/ironic.sqlite" ]; then
	# `upgrade` fails on SQLite; create_schema builds the current schema at once.
	ironic-dbsync --config-file "$dir/ironic.conf" create_schema >"$dir/log/dbsync.log" 2>&1 || {
		echo "ironic.sh: ironic-dbsync create_schema failed, see $dir/log/dbsync.log" >&2; tail -5 "$dir/log/dbsync.log" >&2; exit 1; }
	# WAL: readers do not block the writer. API and conductor share the file,
	# and eventlet's green threads wait for SQLite's lock inside one blocking
	# call: with the default rollback journal, a green thread's open read
	# blocks another's commit until "database is locked" (seen with
	# redfish-virtual-media cleaning). WAL stays set in the file.
	/usr/bin/python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("PRAGMA journal_mode=WAL").fetchone()[0])' "$dir/ironic.sqlite" | grep -qx wal ||
		{ echo "ironic.sh: could not set $dir/ironic.sqlite to WAL mode" >&2; exit 1; }
fi

start_one() { # name
	# requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override the CA file
	# sushy is given: with them set, redfish_verify_ca is ignored and every
	# Redfish call fails with "self-signed certificate".
	env -u REQUESTS_CA_BUNDLE -u CURL_CA_BUNDLE setsid "ironic-$1" --config-file "$dir/ironic.conf" >"$dir/log/$1.out" 2>&1 </dev/null &
	echo $! >"$dir/$1.pid"
}
start_one conductor
start_one api
# The web server of [deploy]http_root (Debian's Python, bound to loopback).
setsid /usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$dir/httpboot" "$http_port" >"$dir/log/http.out" 2>&1 </dev/null &
echo $! >"$dir/http.pid"

# Wait for the API, and for the conductor to register (else enroll fails with
# "No conductor service registered").
ok=0
for _ in $(seq 1 300); do
	if curl -fsS "http://127.0.0.1:$api_port/v1/drivers" 2>/dev/null | grep -q '"ipmi"'; then ok=1; break; fi
	for n in api conductor http; do
		kill -0 "$(cat "$dir/$n.pid")" 2>/dev/null || { echo "ironic.sh: $n exited, see $dir/log" >&2; tail -20 "$dir/log/$n.out" "$dir/log/ironic-$n.log" 2>/dev/null >&2; stop_all; exit 1; }
	done
	sleep 0.2
done
if [ "$ok" != 1 ]; then
	echo "ironic.sh: the API at 127.0.0.1:$api_port did not list the ipmi driver within 60 s, see $dir/log" >&2
	stop_all
	exit 1
fi
echo "ironic.sh: Ironic $(dpkg-query -W -f='${Version}' ironic-api 2>/dev/null) at http://127.0.0.1:$api_port (require_tls=$require_tls, boot ISOs at http://127.0.0.1:$http_port, state $dir)"
