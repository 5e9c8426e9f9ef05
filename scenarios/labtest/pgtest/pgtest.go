// Package pgtest starts a throw-away PostgreSQL server for tests: Debian's
// postgresql binaries, a data folder in a temporary directory, listening on
// 127.0.0.1 on a free port, trust authentication, stopped by the test's
// cleanup. Run as root, the server runs as the postgres user (it refuses
// root). Without PostgreSQL the test skips with the install command, or
// fails under CI=true (scenarios/labtest's policy). Like labtest it imports
// nothing of ironlab, so any package's tests can use it; it lives under
// scenarios/ because the driver links nothing there.
package pgtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// Server is a running PostgreSQL server.
type Server struct {
	// DSN connects to its "postgres" database as the superuser postgres.
	DSN  string
	Port int
	dbs  atomic.Int64
}

// BinDir finds the folder of initdb and postgres: Debian keeps them in
// /usr/lib/postgresql/<version>/bin (the newest is taken), elsewhere they
// are on PATH.
func BinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("no initdb in /usr/lib/postgresql/*/bin or on PATH")
}

func version(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

// Start starts a server for the test and stops it in the test's cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	var bin string
	labtest.RequireFunc(t, "PostgreSQL server (initdb, postgres)", labtest.InstallCommand("postgres"), func() error {
		var err error
		bin, err = BinDir()
		return err
	})
	dir, err := os.MkdirTemp("", "ironlab-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cred, err := credential(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb %s: %v\n%s", data, err, out)
	}
	port := freePort(t)
	srv := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-h", "127.0.0.1", "-p", strconv.Itoa(port),
		"-k", dir, "-F", "-c", "max_connections=200", "-c", "shared_buffers=16MB", "-c", "full_page_writes=off",
		"-c", "synchronous_commit=off")
	srv.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	logs, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	exited := make(chan struct{})
	go func() { srv.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGINT is PostgreSQL's fast shutdown.
		srv.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(labtest.Patience):
			srv.Process.Kill()
			<-exited
		}
	})
	ready := make(chan struct{})
	var tail strings.Builder
	go func() {
		sc := bufio.NewScanner(logs)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			if !signalled {
				tail.WriteString(line + "\n")
			}
			if !signalled && strings.Contains(line, "ready to accept connections") {
				signalled = true
				close(ready)
			}
		}
		io.Copy(io.Discard, logs)
	}()
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("postgres on 127.0.0.1:%d exited before it was ready", port)
	case <-time.After(labtest.Patience):
		t.Fatalf("postgres on 127.0.0.1:%d not ready within %s", port, labtest.Patience)
	}
	return &Server{DSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), Port: port}
}

// NewDatabase creates an empty database on the server and returns its DSN.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), labtest.Patience)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatalf("connect to %s: %v", s.DSN, err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("t%d", s.dbs.Add(1))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, name)
}

// credential is who runs initdb and postgres: the postgres user when we are
// root (PostgreSQL refuses root), owning dir; nil (ourselves) otherwise.
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
