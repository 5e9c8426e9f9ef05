"""Drive a BMC with pyghmi's IPMI client (what Ironic's ipmi/pyghmi drivers
and virtualbmc's users run). Usage: pyghmi_client.py HOST PORT USER PASSWORD.
Prints one JSON object: what pyghmi read back after each step, or the error.
"""
import json
import os
import sys

from pyghmi.ipmi import command


def main():
    host, port, user, password = sys.argv[1:5]
    out = {}
    try:
        c = command.Command(bmc=host, userid=user, password=password,
                            port=int(port), keepalive=False)
        out['power0'] = c.get_power()['powerstate']
        c.set_power('on', wait=10)
        out['power1'] = c.get_power()['powerstate']
        c.set_bootdev('network')
        out['boot1'] = c.get_bootdev()
        c.set_bootdev('hd', persist=True, uefiboot=True)
        out['boot2'] = c.get_bootdev()
        c.set_power('off', wait=10)
        out['power2'] = c.get_power()['powerstate']
    except Exception as e:  # report, do not hang: pyghmi keeps threads
        out['error'] = '%s: %s' % (type(e).__name__, e)
    sys.stdout.write(json.dumps(out) + '\n')
    sys.stdout.flush()
    os._exit(0)


main()
