package bmc

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
)

func TestFaultsDecode(t *testing.T) {
	want := Faults{NoAnswer: true, Delay: Duration(1500 * time.Millisecond), RefuseCredentials: true}
	var fy Faults
	if err := yaml.Unmarshal([]byte("no_answer: true\ndelay: 1.5s\nrefuse_credentials: true\n"), &fy); err != nil || fy != want {
		t.Errorf("yaml: %+v, %v; want %+v", fy, err, want)
	}
	var fj Faults
	if err := json.Unmarshal([]byte(`{"no_answer":true,"delay":"1.5s","refuse_credentials":true}`), &fj); err != nil || fj != want {
		t.Errorf("json: %+v, %v; want %+v", fj, err, want)
	}
	out, err := json.Marshal(want)
	if err != nil || string(out) != `{"no_answer":true,"delay":"1.5s","refuse_credentials":true}` {
		t.Errorf("marshal: %s, %v", out, err)
	}
}
