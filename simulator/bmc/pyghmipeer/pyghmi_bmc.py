"""A pyghmi BMC (the base of virtualbmc) with power and boot device in memory,
for comparing throughput with ironlab's BMC (`ironlab bench --compare` and
simulator/bmc's BenchmarkLanplus run it). Usage: pyghmi_bmc.py PORT.
Listens on 127.0.0.1 only; user admin, password password."""
import sys

import pyghmi.ipmi.bmc as bmc


class LabBmc(bmc.Bmc):
    def __init__(self, port):
        super().__init__({'admin': 'password'}, port=port, address='127.0.0.1')
        self.power = 'off'
        self.bootdev = 'hd'

    def get_power_state(self):
        return self.power

    def power_on(self):
        self.power = 'on'

    def power_off(self):
        self.power = 'off'

    def power_shutdown(self):
        self.power = 'off'

    def power_reset(self):
        pass

    def power_cycle(self):
        self.power = 'on'

    def get_boot_device(self):
        return self.bootdev

    def set_boot_device(self, bootdevice):
        self.bootdev = bootdevice


b = LabBmc(int(sys.argv[1]))
sys.stdout.write('ready\n')
sys.stdout.flush()
b.listen()
