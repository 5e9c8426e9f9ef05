// Package pgserver starts a PostgreSQL server of the lab's own: Debian's
// postgresql binaries (initdb, postgres), a data folder in a directory the
// caller gives, listening on 127.0.0.1 only, on a free port, trust
// authentication for loopback. Run as root, the server runs as the
// postgres user (PostgreSQL refuses root). `ironlab up --conductors`, the
// scenario runner (lab.conductors) and the tests' scenarios/labtest/pgtest
// start theirs through it.
package pgserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// InstallHint is what to install when the binaries are missing.
const InstallHint = "apt-get install -y --no-install-recommends postgresql"

// Server is a running PostgreSQL server.
type Server struct {
	// Port is its TCP port on 127.0.0.1; Dir holds data/ and the log.
	Port int
	Dir  string
	// Log is the server's log file.
	Log string

	cmd    *exec.Cmd
	exited chan struct{}
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
	return "", fmt.Errorf("no PostgreSQL server binaries (initdb, postgres) in /usr/lib/postgresql/*/bin or on PATH (%s)", InstallHint)
}

func version(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

// Start initialises dir/data unless it holds a cluster already (a lab
// started again on the same state folder keeps its database), then starts
// the server on 127.0.0.1:port (0: a free port) and returns once it
// accepts connections. Stop ends it.
func Start(ctx context.Context, dir string, port int) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make the PostgreSQL folder %s: %w", dir, err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	cred, err := credential(dir)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
		initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := initdb.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("initdb %s: %w\n%s", data, err, out)
		}
	}
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the PostgreSQL log: %w", err)
	}
	srv := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-h", "127.0.0.1", "-p", strconv.Itoa(port),
		"-k", dir, "-F", "-c", "max_connections=200", "-c", "shared_buffers=16MB", "-c", "full_page_writes=off",
		"-c", "synchronous_commit=off")
	srv.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	s := &Server{Port: port, Dir: dir, Log: logPath, cmd: srv, exited: make(chan struct{})}
	go func() { srv.Wait(); logf.Close(); close(s.exited) }()
	if err := s.waitReady(ctx, time.Minute); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// waitReady connects until the server answers.
func (s *Server) waitReady(ctx context.Context, patience time.Duration) error {
	deadline := time.Now().Add(patience)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, s.DSN("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("postgres on 127.0.0.1:%d exited before it was ready (see %s)", s.Port, s.Log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres on 127.0.0.1:%d not ready within %s (see %s): %w", s.Port, patience, s.Log, err)
		}
	}
}

// DSN connects to database db as the superuser postgres.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

var dbName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// CreateDatabase creates database name unless it exists, and returns its DSN.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	if !dbName.MatchString(name) {
		return "", fmt.Errorf("database name %q: want lower-case letters, digits and _", name)
	}
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("connect to the lab's PostgreSQL on port %d: %w", s.Port, err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", fmt.Errorf("look for database %s: %w", name, err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			return "", fmt.Errorf("create database %s: %w", name, err)
		}
	}
	return s.DSN(name), nil
}

// Stop shuts the server down (SIGINT: PostgreSQL's fast shutdown), and
// kills it if it has not stopped within 30 s.
func (s *Server) Stop() error {
	if s == nil || s.cmd == nil {
		return nil
	}
	select {
	case <-s.exited:
		return nil
	default:
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
		return nil
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		return errors.New("postgres did not stop within 30s of SIGINT; killed")
	}
}

// credential is who runs initdb and postgres: the postgres user when we are
// root (PostgreSQL refuses root), owning dir; nil (ourselves) otherwise.
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no postgres user (%s creates it): %w", InstallHint, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}); err != nil {
		return nil, fmt.Errorf("give %s to the postgres user: %w", dir, err)
	}
	// The server must reach its folder: every parent must let it through.
	for p := filepath.Dir(dir); p != "/" && p != "."; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return nil, fmt.Errorf("the postgres user cannot reach %s: %s is mode %s (give others x, or choose a state folder elsewhere)", dir, p, fi.Mode().Perm())
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
