package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// The heartbeat load's HTTP client. Go's net/http client costs about 30 us
// of CPU per request here, close to the driver's ~39 us per heartbeat, and
// both share the same two cores: with it the bench measured its own client
// as much as the driver. This one keeps a keep-alive TCP connection per
// worker, sends each heartbeat as bytes encoded before the loop (the same
// request line, headers and JSON body net/http sent) and reads each answer
// with a small HTTP/1.1 response parser: status line, headers, and the body
// by Content-Length, chunked, or up to the close. It is still real HTTP
// over real TCP against the real server.

// hbRequests encodes one POST /v1/heartbeat/{uuid} per target for base
// (http://host:port, as the loops are given), with the headers net/http's
// client sent for it.
func hbRequests(base string, targets []hbTarget, bodies [][]byte) (hostport string, reqs [][]byte, err error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, fmt.Errorf("heartbeat load: API URL %q: %w", base, err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return "", nil, fmt.Errorf("heartbeat load: API URL %q: want http://host:port", base)
	}
	hostport = u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "80")
	}
	prefix := u.EscapedPath()
	for len(prefix) > 0 && prefix[len(prefix)-1] == '/' {
		prefix = prefix[:len(prefix)-1]
	}
	reqs = make([][]byte, len(targets))
	for i, t := range targets {
		var b bytes.Buffer
		fmt.Fprintf(&b, "POST %s/v1/heartbeat/%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: Go-http-client/1.1\r\n"+
			"Content-Length: %d\r\nContent-Type: application/json\r\nX-Openstack-Ironic-Api-Version: %s\r\n"+
			"Accept-Encoding: gzip\r\n\r\n", prefix, url.PathEscape(t.UUID), u.Host, len(bodies[i]), loadVersion)
		b.Write(bodies[i])
		reqs[i] = b.Bytes()
	}
	return hostport, reqs, nil
}

// hbConn is one worker's connection: dialled on first use and again after
// the server closed it (Connection: close, a body up to the close, or an
// error).
type hbConn struct {
	addr     string
	deadline time.Time // for every read and write (the loop's context's)
	conn     net.Conn
	br       *bufio.Reader
	served   int // answers read on conn
}

func (c *hbConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

func (c *hbConn) dial(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	if !c.deadline.IsZero() {
		if err := conn.SetDeadline(c.deadline); err != nil {
			conn.Close()
			return err
		}
	}
	c.conn, c.served = conn, 0
	if c.br == nil {
		c.br = bufio.NewReaderSize(conn, 4096)
	} else {
		c.br.Reset(conn)
	}
	return nil
}

// do sends req and returns the answer's status code, its body read. A
// connection the server closed while idle (nothing of an answer read) is
// redialled and the request sent once more, as net/http does.
func (c *hbConn) do(ctx context.Context, req []byte) (int, error) {
	for attempt := 0; ; attempt++ {
		if c.conn == nil {
			if err := c.dial(ctx); err != nil {
				return 0, fmt.Errorf("connect to %s: %w", c.addr, err)
			}
		}
		reused := c.served > 0
		status, started, err := c.roundTrip(req)
		if err == nil {
			return status, nil
		}
		c.close()
		if reused && !started && attempt == 0 && ctx.Err() == nil && idleClose(err) {
			continue
		}
		return 0, err
	}
}

// idleClose says whether err is how a connection the server closed shows.
func idleClose(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// roundTrip writes req and reads one final answer; started says whether
// any byte of an answer came.
func (c *hbConn) roundTrip(req []byte) (status int, started bool, err error) {
	if _, err := c.conn.Write(req); err != nil {
		return 0, false, fmt.Errorf("send heartbeat: %w", err)
	}
	for {
		status, keep, err := readResponse(c.br, &started)
		if err != nil {
			return 0, started, err
		}
		if status >= 100 && status < 200 && status != 101 {
			continue // 100 Continue and the like: the answer follows
		}
		c.served++
		if !keep {
			c.close()
		}
		return status, true, nil
	}
}

// errBadResponse wraps what the parser rejects.
var errBadResponse = errors.New("bad HTTP response")

// readResponse reads one HTTP/1.x response from br, its body discarded,
// and says whether the connection stays open after it.
func readResponse(br *bufio.Reader, started *bool) (status int, keepAlive bool, err error) {
	line, err := readLine(br)
	if len(line) > 0 || br.Buffered() > 0 {
		*started = true
	}
	if err != nil {
		return 0, false, fmt.Errorf("read answer's status line: %w", err)
	}
	// HTTP/1.1 202 Accepted
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || (line[7] != '0' && line[7] != '1') ||
		line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return 0, false, fmt.Errorf("%w: status line %q", errBadResponse, line)
	}
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return 0, false, fmt.Errorf("%w: status line %q", errBadResponse, line)
		}
		status = status*10 + int(d-'0')
	}
	if status < 100 {
		return 0, false, fmt.Errorf("%w: status line %q", errBadResponse, line)
	}
	http10 := line[7] == '0'
	keepAlive = !http10
	length, chunked := int64(-1), false
	for n := 0; ; n++ {
		if n > 100 {
			return 0, false, fmt.Errorf("%w: more than 100 header lines", errBadResponse)
		}
		h, err := readLine(br)
		if err != nil {
			return 0, false, fmt.Errorf("read answer's headers: %w", err)
		}
		if len(h) == 0 {
			break
		}
		colon := bytes.IndexByte(h, ':')
		if colon <= 0 {
			return 0, false, fmt.Errorf("%w: header line %q", errBadResponse, h)
		}
		name, value := h[:colon], bytes.TrimSpace(h[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			v, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || v < 0 || (length >= 0 && v != length) {
				return 0, false, fmt.Errorf("%w: Content-Length %q", errBadResponse, value)
			}
			length = v
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			codings := bytes.Split(value, []byte(","))
			if bytes.EqualFold(bytes.TrimSpace(codings[len(codings)-1]), []byte("chunked")) {
				chunked = true
			}
		case bytes.EqualFold(name, []byte("Connection")):
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = bytes.TrimSpace(tok)
				switch {
				case bytes.EqualFold(tok, []byte("close")):
					keepAlive = false
				case bytes.EqualFold(tok, []byte("keep-alive")) && http10:
					keepAlive = true
				}
			}
		}
	}
	switch {
	case (status >= 100 && status < 200) || status == 204 || status == 304:
		// no body
	case chunked: // (it wins over a Content-Length, RFC 9112 6.3)
		if err := discardChunked(br); err != nil {
			return 0, false, err
		}
	case length >= 0:
		if _, err := br.Discard(int(length)); err != nil {
			return 0, false, fmt.Errorf("read answer's body (%d bytes): %w", length, err)
		}
	default: // the body runs to the close
		if _, err := io.Copy(io.Discard, br); err != nil {
			return 0, false, fmt.Errorf("read answer's body to the close: %w", err)
		}
		keepAlive = false
	}
	return status, keepAlive, nil
}

// discardChunked reads a chunked body and its trailers.
func discardChunked(br *bufio.Reader) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return fmt.Errorf("read answer's chunk size: %w", err)
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // chunk extensions
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("%w: chunk size %q", errBadResponse, line)
		}
		if size == 0 {
			for n := 0; ; n++ { // trailers up to the empty line
				t, err := readLine(br)
				if err != nil {
					return fmt.Errorf("read answer's trailers: %w", err)
				}
				if len(t) == 0 {
					return nil
				}
				if n > 100 {
					return fmt.Errorf("%w: more than 100 trailer lines", errBadResponse)
				}
			}
		}
		if _, err := br.Discard(int(size)); err != nil {
			return fmt.Errorf("read answer's chunk (%d bytes): %w", size, err)
		}
		if crlf, err := readLine(br); err != nil || len(crlf) != 0 {
			if err == nil {
				err = fmt.Errorf("%w: chunk not ended by CRLF", errBadResponse)
			}
			return fmt.Errorf("read answer's chunk end: %w", err)
		}
	}
}

// readLine returns the next line without its CRLF (or LF). The slice is
// br's buffer: valid until the next read. A line longer than the buffer is
// an error.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: line longer than %d bytes", errBadResponse, br.Size())
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return line, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}
