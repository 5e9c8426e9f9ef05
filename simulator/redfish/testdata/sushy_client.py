"""Drive one system of an ironlab Redfish service with sushy (Debian's
python3-sushy, what Ironic's redfish hardware type uses).

usage: sushy_client.py URL USER PASSWORD SYSTEM_PATH VERIFY
VERIFY is a CA file or "false". Commands come one per line on stdin; each
answer is one JSON line on stdout ({"error": ...} when sushy raised), so
the Go test checks the machine between steps.
"""
import json
import sys
import time

import sushy


def main():
    url, user, password, path, verify = sys.argv[1:6]
    if verify == "false":
        verify = False
    root = sushy.Sushy(url, username=user, password=password, verify=verify)
    system = root.get_system(path)

    def state():
        system.refresh()
        b = system.boot
        return {
            "power": str(system.power_state.value),
            "target": b.target.value if b.target else None,
            "enabled": b.enabled.value if b.enabled else None,
            "mode": b.mode.value if b.mode else None,
        }

    def cd():
        mgr = system.managers[0]
        return mgr.virtual_media.get_member(mgr.virtual_media.members_identities[0])

    def do(cmd, args):
        if cmd == "state":
            return state()
        if cmd == "inventory":
            return {
                "cpus": system.processors.summary.count,
                "arch": system.processors.summary.architecture.value,
                "memory_gib": system.memory_summary.size_gib,
                "macs": sorted(system.ethernet_interfaces.summary),
                "disks": sorted(d.capacity_bytes for s in system.simple_storage.get_members() for d in s.devices),
                "bios_version": system.bios_version,
                "allowed_targets": sorted(v.value for v in system.get_allowed_system_boot_source_values()),
                "allowed_resets": sorted(v.value for v in system.get_allowed_reset_system_values()),
            }
        if cmd == "reset":
            system.reset_system(sushy.ResetType(args[0]))
            return state()
        if cmd == "boot":
            target, enabled, mode = args
            system.set_system_boot_options(
                sushy.BootSource(target),
                enabled=sushy.BootSourceOverrideEnabled(enabled),
                mode=sushy.BootSourceOverrideMode(mode))
            return state()
        if cmd == "insert":
            vm = cd()
            vm.insert_media(args[0], inserted=True, write_protected=True)
            vm.refresh()
            return {"inserted": vm.inserted, "image": vm.image, "types": sorted(t.value for t in vm.media_types)}
        if cmd == "eject":
            vm = cd()
            vm.eject_media()
            vm.refresh()
            return {"inserted": vm.inserted, "image": vm.image}
        if cmd == "bios_set":
            bios = system.bios
            bios.set_attributes({args[0]: args[1]})
            bios.refresh()
            return {"pending": bios.pending_attributes, "current": bios.attributes.get(args[0])}
        if cmd == "bios_get":
            system.bios.refresh()
            return {"current": system.bios.attributes.get(args[0])}
        if cmd == "secure_boot":
            sb = system.secure_boot
            sb.set_enabled(args[0] == "true")
            sb.refresh()
            return {"enabled": sb.enabled}
        if cmd == "update":
            us = root.get_update_service()
            mon = us.simple_update(args[0], targets=[path])
            mon.wait(60)
            task = mon.get_task()
            # The monitor may answer "done" a moment before the task
            # resource it names is read back; read it until it has ended.
            deadline = time.time() + 30
            while task.task_state.value in ("New", "Starting", "Running", "Pending") and time.time() < deadline:
                time.sleep(0.1)
                task.refresh()
            system.refresh()
            return {"task_state": task.task_state.value, "bios_version": system.bios_version,
                    "messages": [m.message for m in task.messages]}
        raise ValueError("unknown command %r" % cmd)

    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        try:
            out = do(parts[0], parts[1:])
        except Exception as e:  # report to the Go test, keep serving
            out = {"error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
