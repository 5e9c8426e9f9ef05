package api_test

import (
	"testing"

	"github.com/ironlab/ironlab/driver"
)

// TestProvisionConfigdrive: the deploy request's configdrive is kept in
// instance_info.configdrive, as Ironic does; where it cannot apply it is
// refused rather than dropped.
func TestProvisionConfigdrive(t *testing.T) {
	s := newServer(t, func(c *driver.Config) { c.AutomatedClean = false })
	if r := s.do(t, "POST", "/v1/nodes", "", `{"name": "node-a", "driver": "fake_agent", `+image+`}`); r.status != 201 {
		t.Fatal(r.body)
	}
	run(t, s, []step{
		{"not on manage", "PUT", "/v1/nodes/node-a/states/provision", "", `{"target": "manage", "configdrive": {"meta_data": {}}}`, 400, "only supported when setting provision state to active"},
		{"not a number", "PUT", "/v1/nodes/node-a/states/provision", "", `{"target": "active", "configdrive": 42}`, 400, "Invalid configdrive"},
	})
	if r := s.do(t, "PUT", "/v1/nodes/node-a/states/provision", "", `{"target": "manage"}`); r.status != 202 {
		t.Fatal(r.body)
	}
	s.do(t, "PUT", "/v1/nodes/node-a/states/provision", "", `{"target": "provide"}`)
	r := s.do(t, "PUT", "/v1/nodes/node-a/states/provision", "", `{"target": "active", "configdrive": {"meta_data": {"hostname": "h1"}}}`)
	if r.status != 202 {
		t.Fatalf("deploy with a configdrive: %d %s", r.status, r.body)
	}
	r = s.do(t, "GET", "/v1/nodes/node-a", "", "")
	cd, _ := r.json["instance_info"].(map[string]any)["configdrive"].(map[string]any)
	if md, _ := cd["meta_data"].(map[string]any); md["hostname"] != "h1" {
		t.Errorf("instance_info.configdrive = %v, want the request's", r.json["instance_info"])
	}
}
