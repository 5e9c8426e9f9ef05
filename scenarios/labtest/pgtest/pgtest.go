// Package pgtest starts a throw-away PostgreSQL server for tests through
// simulator/pgserver (Debian's postgresql binaries, a data folder in a
// temporary directory, 127.0.0.1 on a free port, trust authentication),
// stopped by the test's cleanup. Without PostgreSQL the test skips with the
// install command, or fails under CI=true (scenarios/labtest's policy). It
// lives under scenarios/ because the driver links nothing there.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/simulator/pgserver"
)

// Server is a running PostgreSQL server.
type Server struct {
	// DSN connects to its "postgres" database as the superuser postgres.
	DSN  string
	Port int
	srv  *pgserver.Server
	dbs  atomic.Int64
}

// BinDir finds the folder of initdb and postgres (pgserver.BinDir).
func BinDir() (string, error) { return pgserver.BinDir() }

// Require skips (or, under CI=true, fails) the test when PostgreSQL's
// server binaries are missing.
func Require(t testing.TB) {
	t.Helper()
	labtest.RequireFunc(t, "PostgreSQL server (initdb, postgres)", labtest.InstallCommand("postgres"), func() error {
		_, err := pgserver.BinDir()
		return err
	})
}

// Start starts a server for the test and stops it in the test's cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	Require(t)
	dir, err := os.MkdirTemp("", "ironlab-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), labtest.Patience)
	defer cancel()
	srv, err := pgserver.Start(ctx, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Error(err)
		}
	})
	return &Server{DSN: srv.DSN("postgres"), Port: srv.Port, srv: srv}
}

// NewDatabase creates an empty database on the server and returns its DSN.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), labtest.Patience)
	defer cancel()
	dsn, err := s.srv.CreateDatabase(ctx, fmt.Sprintf("t%d", s.dbs.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}
