package conductor_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/deploy"
	"github.com/ironlab/ironlab/driver/deploy/agent"
	"github.com/ironlab/ironlab/driver/power"
	"github.com/ironlab/ironlab/driver/power/fake"
	"github.com/ironlab/ironlab/driver/store"
	"github.com/ironlab/ironlab/driver/store/sqlite"
)

// openStore opens an empty SQLite store in tb's temporary folder, closed
// by tb's cleanup (after the conductors newConductor made over it).
func openStore(tb testing.TB) *sqlite.SQLite {
	tb.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "ironlab.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// newConductor is a conductor over st with cfg, closed by tb's cleanup.
// Where cfg names none, its power interface is the fake one and its deploy
// interface the agent deploy with its defaults.
func newConductor(tb testing.TB, st store.Store, cfg conductor.Config) *conductor.Conductor {
	tb.Helper()
	if cfg.PowerInterfaces == nil {
		cfg.PowerInterfaces = map[string]power.Interface{"fake": fake.New()}
	}
	if cfg.DeployInterfaces == nil {
		cfg.DeployInterfaces = map[string]deploy.Interface{"agent": agent.New(agent.Config{})}
	}
	c := conductor.New(st, cfg)
	tb.Cleanup(c.Close)
	return c
}
