package bmc

import (
	"encoding/json"
	"fmt"
	"time"
)

// Faults are a BMC's injected failures. Scenarios set them as data (yaml or
// json) and may change them while the BMC runs.
type Faults struct {
	// NoAnswer drops every packet: the BMC looks unplugged.
	NoAnswer bool `json:"no_answer,omitempty" yaml:"no_answer,omitempty"`
	// Delay holds every answer this long before sending it (a slow BMC).
	Delay Duration `json:"delay,omitempty" yaml:"delay,omitempty"`
	// RefuseCredentials rejects every login, with the right password too.
	RefuseCredentials bool `json:"refuse_credentials,omitempty" yaml:"refuse_credentials,omitempty"`
}

// Duration is a time.Duration written as "1.5s" in yaml and json.
type Duration time.Duration

// MarshalText writes d as Go's duration syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads "250ms", "2s"...
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bmc fault delay %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalJSON takes either a duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(b, &n); err == nil {
		*d = Duration(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("bmc fault delay %s: want a duration string", b)
	}
	return d.UnmarshalText([]byte(s))
}
