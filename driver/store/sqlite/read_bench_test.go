package sqlite

import (
	"context"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor/states"
	"github.com/ironlab/ironlab/driver/store"
)

// deployNode is a node as a deploy holds it: driver_info with the BMC,
// instance_info with the image, properties; driver_internal_info, extra
// and the steps empty, as most nodes' are.
func deployNode() *store.Node {
	return &store.Node{UUID: "00000000-0000-4000-8000-000000000001", Name: "n-1", Driver: "agent_pyghmi",
		ProvisionState: states.DeployWait, TargetProvisionState: states.Active, PowerState: "power on",
		DriverInfo: map[string]any{"ipmi_address": "127.0.0.1", "ipmi_port": float64(6231), "ipmi_username": "admin",
			"ipmi_password": "password", "deploy_kernel": "http://127.0.0.1:8080/agent.kernel", "deploy_ramdisk": "http://127.0.0.1:8080/agent.initramfs"},
		DriverInternalInfo: map[string]any{},
		InstanceInfo: map[string]any{"image_source": "http://127.0.0.1:8080/bench-os.img", "image_checksum": "0123456789abcdef0123456789abcdef",
			"image_disk_format": "raw", "root_gb": float64(1)},
		Properties: map[string]any{"cpu_arch": "x86_64", "memory_mb": float64(1024), "local_gb": float64(10), "cpus": float64(1)},
		Extra:      map[string]any{}}
}

// BenchmarkGetNode is a task's read of its node (acquire): every column,
// the JSON ones decoded.
func BenchmarkGetNode(b *testing.B) {
	ctx := context.Background()
	s, _ := open(b)
	n := deployNode()
	if err := s.CreateNode(ctx, n); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetNode(ctx, n.UUID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSave is a task's save of its node with one event, alone.
func BenchmarkSave(b *testing.B) {
	ctx := context.Background()
	s, _ := open(b)
	n := deployNode()
	if err := s.CreateNode(ctx, n); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.UpdateNode(ctx, n, &store.Event{NodeUUID: n.UUID, Kind: store.KindPower, Event: "power on", Detail: []byte(`{"interface":"ipmi"}`)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetAgent is the fast-track check's read of the node's agent
// fields (GetAgent), where it read the whole node (BenchmarkGetNode).
func BenchmarkGetAgent(b *testing.B) {
	ctx := context.Background()
	s, _ := open(b)
	n := deployNode()
	if err := s.CreateNode(ctx, n); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetAgent(ctx, n.UUID); err != nil {
			b.Fatal(err)
		}
	}
}
