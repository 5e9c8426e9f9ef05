package fakeagent

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Faults are the agent's fault knobs. They are data: scenario files set them
// (YAML or JSON), and Agent.SetFaults applies them at runtime. The zero value
// injects nothing.
//
// Commands are named by their full name ("clean.execute_clean_step"), their
// short name ("execute_clean_step"), or, for execute_clean_step and
// execute_deploy_step, by the step they run ("erase_devices", "write_image").
type Faults struct {
	// StopHeartbeats silences the heartbeat after a number of heartbeats.
	StopHeartbeats *HeartbeatStop `json:"stop_heartbeats,omitempty" yaml:"stop_heartbeats,omitempty"`
	// FailCommand makes a named command end FAILED with the given error.
	FailCommand *CommandFailure `json:"fail_command,omitempty" yaml:"fail_command,omitempty"`
	// CrashDuring makes the agent crash while running the named command: it
	// stops heartbeating and drops every API connection until it reboots.
	CrashDuring string `json:"crash_during,omitempty" yaml:"crash_during,omitempty"`
	// HangCommand makes the named command stay RUNNING until the fault is
	// cleared (SetFaults without it) or the agent stops.
	HangCommand string `json:"hang_command,omitempty" yaml:"hang_command,omitempty"`
	// DiskWriteBytesPerSecond throttles every disk write (image and erase); 0
	// means full speed.
	DiskWriteBytesPerSecond int64 `json:"disk_write_bytes_per_second,omitempty" yaml:"disk_write_bytes_per_second,omitempty"`
	// WrongVerifyCA makes an auto-TLS agent send, as agent_verify_ca, a
	// certificate other than the one it serves (a broken ramdisk, or a
	// man in the middle): a conductor that verifies must refuse to talk
	// to it.
	WrongVerifyCA bool `json:"wrong_verify_ca,omitempty" yaml:"wrong_verify_ca,omitempty"`
}

// HeartbeatStop stops heartbeats after After successful heartbeats (counted
// from when the faults were set) for the duration For, then resumes. A zero
// For stays silent until the faults change or the agent reboots.
type HeartbeatStop struct {
	After int      `json:"after" yaml:"after"`
	For   Duration `json:"for,omitempty" yaml:"for,omitempty"`
}

// CommandFailure makes Command end FAILED with Error as its message.
type CommandFailure struct {
	Command string `json:"command" yaml:"command"`
	Error   string `json:"error" yaml:"error"`
}

// Duration is a time.Duration written as a Go duration string ("90s", "2m")
// in YAML and JSON.
type Duration time.Duration

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// Validate reports knobs that cannot work.
func (f Faults) Validate() error {
	if f.StopHeartbeats != nil && (f.StopHeartbeats.After < 0 || f.StopHeartbeats.For < 0) {
		return fmt.Errorf("faults: stop_heartbeats.after and .for must not be negative")
	}
	if f.FailCommand != nil && f.FailCommand.Command == "" {
		return fmt.Errorf("faults: fail_command.command is empty")
	}
	if f.DiskWriteBytesPerSecond < 0 {
		return fmt.Errorf("faults: disk_write_bytes_per_second must not be negative")
	}
	return nil
}

// ParseFaults reads faults from JSON, rejecting unknown fields so a typo in a
// scenario is an error rather than a fault that silently never fires.
func ParseFaults(b []byte) (Faults, error) {
	var f Faults
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Faults{}, fmt.Errorf("parse faults: %w", err)
	}
	return f, f.Validate()
}

// commandMatches reports whether a fault's command name designates the
// command full ("ext.cmd") running step (may be empty).
func commandMatches(fault, full, step string) bool {
	if fault == "" {
		return false
	}
	short := full
	if i := strings.IndexByte(full, '.'); i >= 0 {
		short = full[i+1:]
	}
	return fault == full || fault == short || (step != "" && fault == step)
}
