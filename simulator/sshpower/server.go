// Package sshpower is the lab's virtualization host as Ironic's old SSHPower
// saw it: an SSH server on loopback (password or public-key auth) that runs
// the virsh command lines SSHPower sent (start, destroy, reset, list,
// domstate, dumpxml, the EDITOR=sed "virsh edit" that sets the boot device,
// and their awk/tr/head pipelines) against the lab's machines, through
// simulator.Machine only. Anything else exits non-zero with a message.
package sshpower

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ironlab/ironlab/simulator"
)

// User is one login the server accepts: a password, keys, or both.
type User struct {
	Name     string
	Password string          // empty: no password login
	Keys     []ssh.PublicKey // authorized keys
}

// Config configures a Server.
type Config struct {
	// Addr is where to listen (127.0.0.1:0: a free loopback port).
	Addr string
	// Users are the accepted logins; several entries may share a name.
	Users []User
	// HostKey is the server's key (a fresh ed25519 key when nil).
	HostKey ssh.Signer
	// Machines lists the host's domains (called per command).
	Machines func() []simulator.Machine
	Logger   *slog.Logger
}

// Server is a running SSH endpoint.
type Server struct {
	cfg  Config
	ln   net.Listener
	ssh  *ssh.ServerConfig
	log  *slog.Logger
	mu   sync.Mutex
	cons map[net.Conn]bool
	wg   sync.WaitGroup
	done chan struct{}
	once sync.Once
}

// New listens on cfg.Addr; Start accepts connections.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Machines == nil {
		return nil, errors.New("sshpower: no machines")
	}
	if cfg.HostKey == nil {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		if cfg.HostKey, err = ssh.NewSignerFromKey(priv); err != nil {
			return nil, err
		}
	}
	s := &Server{cfg: cfg, log: cfg.Logger, cons: map[net.Conn]bool{}, done: make(chan struct{})}
	s.ssh = &ssh.ServerConfig{
		PasswordCallback:  s.checkPassword,
		PublicKeyCallback: s.checkKey,
		MaxAuthTries:      6,
	}
	s.ssh.AddHostKey(cfg.HostKey)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("sshpower: listen on %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	return s, nil
}

// Addr is where the server listens, e.g. 127.0.0.1:40022.
func (s *Server) Addr() *net.TCPAddr { return s.ln.Addr().(*net.TCPAddr) }

// HostKey is the server's public host key.
func (s *Server) HostKey() ssh.PublicKey { return s.cfg.HostKey.PublicKey() }

// AddUser accepts another login from now on.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	s.cfg.Users = append(s.cfg.Users, u)
	s.mu.Unlock()
}

func (s *Server) users() []User {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]User(nil), s.cfg.Users...)
}

var errDenied = errors.New("permission denied")

func (s *Server) checkPassword(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
	for _, u := range s.users() {
		if u.Name == c.User() && u.Password != "" && subtle.ConstantTimeCompare([]byte(u.Password), pw) == 1 {
			return nil, nil
		}
	}
	s.log.Warn("ssh password refused", "user", c.User(), "remote", c.RemoteAddr().String())
	return nil, errDenied
}

func (s *Server) checkKey(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	want := key.Marshal()
	for _, u := range s.users() {
		if u.Name != c.User() {
			continue
		}
		for _, k := range u.Keys {
			if subtle.ConstantTimeCompare(k.Marshal(), want) == 1 {
				return nil, nil
			}
		}
	}
	return nil, errDenied
}

// Start accepts connections until Close.
func (s *Server) Start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				select {
				case <-s.done:
					return
				default:
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return
			}
			s.mu.Lock()
			s.cons[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.cons, c)
					s.mu.Unlock()
					c.Close()
				}()
				s.handle(c)
			}()
		}
	}()
}

// Close stops listening, drops every connection and waits for them.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.ln.Close()
		s.mu.Lock()
		for c := range s.cons {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return err
}

func (s *Server) handle(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	sc, chans, reqs, err := ssh.NewServerConn(c, s.ssh)
	if err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go s.session(sc.User(), ch, creqs)
	}
}

func (s *Server) session(user string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	env := map[string]string{}
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(req.Payload, &kv) == nil {
				env[kv.Name] = kv.Value
			}
			_ = req.Reply(true, nil)
		case "pty-req":
			_ = req.Reply(true, nil)
		case "exec":
			var cmd struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &cmd); err != nil {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			out, errOut, status := s.Run(ctx, cmd.Command, env)
			cancel()
			s.log.Debug("ssh command", "user", user, "command", cmd.Command, "status", status)
			_, _ = ch.Write([]byte(out))
			_, _ = ch.Stderr().Write([]byte(errOut))
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
			return
		default:
			// No interactive shell: this host only runs commands.
			_ = req.Reply(false, nil)
		}
	}
}
