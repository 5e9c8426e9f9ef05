package api

import (
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
)

// heartbeatBodies are what agents send (IPA, the lab's agents, the bench),
// and bodies the fast path must leave to decode.
var heartbeatBodies = []struct {
	body string
	fast bool // heartbeatBody.parse decodes it itself
}{
	{`{"callback_url": "http://127.0.0.1:9/n1", "agent_token": "tok-1_abc", "agent_version": "9.4.0"}`, true},
	{` {"agent_version":"10.0.0","callback_url":"https://10.0.0.5:9999","agent_token":"x","agent_verify_ca":"-----BEGIN CERTIFICATE-----"}` + "\r\n", true},
	{`{"callback_url": "http://a", "agent_status": "end", "agent_status_message": "done: all fine"}`, true},
	{`{}`, true},
	{`{"agent_verify_ca": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "callback_url": "https://a"}`, false},
	{`{"callback_url": "http://\u0061"}`, false},
	{`{"callback_url": null}`, false},
	{`{"callback_url": "http://a", "callback_url": "http://b"}`, false},
	{`{"Callback_URL": "http://a"}`, false},
	{`{"callback_url": "http://a", "extra": "x"}`, false},
	{`{"callback_url": "http://ä"}`, false},
	{`{"callback_url": "http://a"} {}`, false},
	{`{"callback_url": "http://a",}`, false},
	{`{"callback_url": 1}`, false},
	{`[]`, false},
	{``, false},
	{`{"callback_url": "http://a"`, false},
}

// TestHeartbeatBodyFastPath: the agents' bodies take the fast path, the
// others go to decode, and either way the fields are decode's.
func TestHeartbeatBodyFastPath(t *testing.T) {
	for _, tc := range heartbeatBodies {
		var got heartbeatBody
		if ok := got.parse([]byte(tc.body)); ok != tc.fast {
			t.Errorf("parse(%q) = %v, want %v", tc.body, ok, tc.fast)
		}
		checkSameAsDecode(t, []byte(tc.body))
	}
}

// FuzzHeartbeatBody: whatever parse accepts, decode accepts too, with the
// same fields.
func FuzzHeartbeatBody(f *testing.F) {
	for _, tc := range heartbeatBodies {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(checkSameAsDecode)
}

func checkSameAsDecode(t *testing.T, body []byte) {
	t.Helper()
	var got heartbeatBody
	if !got.parse(body) {
		return
	}
	c, _ := gin.CreateTestContext(httptest.NewRecorder())
	var want heartbeatBody
	if !decodeBody(c, body, &want, false) {
		t.Fatalf("parse accepted %q, decode refuses it", body)
	}
	for _, f := range []struct {
		name      string
		got, want *string
	}{
		{"callback_url", got.CallbackURL, want.CallbackURL}, {"agent_token", got.AgentToken, want.AgentToken},
		{"agent_version", got.AgentVersion, want.AgentVersion}, {"agent_verify_ca", got.AgentVerifyCA, want.AgentVerifyCA},
		{"agent_status", got.AgentStatus, want.AgentStatus}, {"agent_status_message", got.AgentStatusMessage, want.AgentStatusMessage},
	} {
		if (f.got == nil) != (f.want == nil) || (f.got != nil && *f.got != *f.want) {
			t.Fatalf("%q: %s parsed as %v, decode gives %v", body, f.name, deref(f.got), deref(f.want))
		}
	}
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}
