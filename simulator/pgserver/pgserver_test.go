package pgserver_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ironlab/ironlab/scenarios/labtest"
	"github.com/ironlab/ironlab/scenarios/labtest/pgtest"
	"github.com/ironlab/ironlab/simulator/pgserver"
)

// TestStartAgainKeepsData: a lab started again on the same folder finds
// its database and rows; Stop ends the server (the port is free again).
func TestStartAgainKeepsData(t *testing.T) {
	pgtest.Require(t)
	dir, err := os.MkdirTemp("", "ironlab-pgserver-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // as root, the server runs as postgres
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), labtest.Patience)
	defer cancel()
	dir = filepath.Join(dir, "postgres")
	srv, err := pgserver.Start(ctx, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	dsn, err := srv.CreateDatabase(ctx, "ironlab")
	if err != nil {
		srv.Stop()
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		srv.Stop()
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('yes')")
	conn.Close(ctx)
	if err != nil {
		srv.Stop()
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(ctx, dsn); err == nil {
		t.Fatalf("%s still answers after Stop", dsn)
	}

	srv, err = pgserver.Start(ctx, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	dsn, err = srv.CreateDatabase(ctx, "ironlab") // exists: no error
	if err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "yes" {
		t.Fatalf("row after restart: %q, %v; want yes", v, err)
	}
	if _, err := srv.CreateDatabase(ctx, "Bad-Name"); err == nil {
		t.Error("CreateDatabase took the name Bad-Name")
	}
}
