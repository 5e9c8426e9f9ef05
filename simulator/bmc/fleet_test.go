package bmc

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator"
	"github.com/ironlab/ironlab/simulator/bmc/bmctest"
)

func TestFleetAddr(t *testing.T) {
	for _, tc := range []struct {
		opts FleetOptions
		i    int
		want string
	}{
		{FleetOptions{}, 0, "127.0.0.1:6230"},
		{FleetOptions{}, 7, "127.0.0.1:6237"},
		{FleetOptions{Addressing: AddressingPort, Host: "127.0.0.9", Port: 7000}, 3, "127.0.0.9:7003"},
		{FleetOptions{Addressing: AddressingIP}, 0, "127.0.0.2:623"},
		{FleetOptions{Addressing: AddressingIP}, 252, "127.0.0.254:623"},
		{FleetOptions{Addressing: AddressingIP}, 253, "127.0.1.1:623"},
		{FleetOptions{Addressing: AddressingIP, Host: "127.1.0.1", Port: 6230}, 999, "127.1.3.238:6230"},
	} {
		got, err := FleetAddr(tc.opts, tc.i)
		if err != nil || got.String() != tc.want {
			t.Errorf("FleetAddr(%+v, %d) = %v, %v; want %s", tc.opts, tc.i, got, err, tc.want)
		}
	}
	for _, bad := range []FleetOptions{
		{Host: "10.0.0.1"},
		{Addressing: "dns"},
		{Addressing: AddressingIP, Host: "127.255.255.254"},
	} {
		if _, err := FleetAddr(bad, 5); err == nil {
			t.Errorf("FleetAddr(%+v) accepted", bad)
		}
	}
	if _, err := New(bmctest.New("x"), "0.0.0.0:0", Options{}); err == nil {
		t.Error("New on a non-loopback address succeeded")
	}
}

// 1000 BMCs in one process, each on its own loopback address, answer power
// status from concurrent clients, each with its own machine's state.
func TestFleetThousand(t *testing.T) {
	const n, workers = 1000, 32
	machines := make([]simulator.Machine, n)
	tms := make([]*bmctest.Machine, n)
	for i := range machines {
		tms[i] = bmctest.New(fmt.Sprintf("node-%d", i))
		if i%3 == 0 {
			tms[i].SetState(simulator.PowerOn, simulator.BootConfig{Device: simulator.BootDisk})
		}
		machines[i] = tms[i]
	}
	opts := FleetOptions{Addressing: AddressingIP, Host: "127.77.0.1", Port: 6230,
		Credentials: []Credentials{{Username: "root", Password: "calvin"}}}
	f, err := NewFleet(machines, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f.Start(ctx)
	defer f.Close()

	jobs := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				errs <- fleetStatus(ctx, f, i, tms[i])
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			if failed++; failed <= 5 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d BMCs failed", failed, n)
	}

	// And real ipmitool, concurrently, on a sample across the fleet.
	path := labtest.Require(t, "ipmitool")
	var iwg sync.WaitGroup
	for i := 1; i < n; i += 100 {
		iwg.Add(1)
		go func() {
			defer iwg.Done()
			a := f.Addr(i)
			out, err := exec.CommandContext(ctx, path, "-I", "lanplus", "-H", a.Addr().String(), "-p", strconv.Itoa(int(a.Port())),
				"-U", "admin", "-P", "password", "-L", "ADMINISTRATOR", "power", "status").CombinedOutput()
			p, _, _ := tms[i].State()
			if err != nil || strings.TrimSpace(string(out)) != "Chassis Power is "+string(p) {
				t.Errorf("ipmitool power status of BMC %d at %s: %v %q, machine is %s", i, a, err, out, p)
			}
		}()
	}
	iwg.Wait()
}

func fleetStatus(ctx context.Context, f *Fleet, i int, m *bmctest.Machine) error {
	a := f.Addr(i)
	creds := f.BMC(i).Credentials()
	c, err := client.NewClient(a.Addr().String(), int(a.Port()), creds.Username, creds.Password)
	if err != nil {
		return err
	}
	c.WithTimeout(2 * time.Second).WithRetry(3).WithCipherSuiteID(types.CipherSuiteID17)
	if err := c.Connect(ctx); err != nil {
		return fmt.Errorf("BMC %d at %s: connect: %w", i, a, err)
	}
	defer c.Close(ctx)
	st, err := c.GetChassisStatus(ctx)
	if err != nil {
		return fmt.Errorf("BMC %d at %s: chassis status: %w", i, a, err)
	}
	p, _, _ := m.State()
	if st.PowerIsOn != (p == simulator.PowerOn) {
		return fmt.Errorf("BMC %d at %s: says on=%v, machine is %s", i, a, st.PowerIsOn, p)
	}
	return nil
}
