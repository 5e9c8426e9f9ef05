package fakeagent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// eventRing keeps the agent's last log lines for log.collect_system_logs,
// bounded so thousands of agents stay cheap.
type eventRing struct {
	lines []string
	next  int
}

const eventRingSize = 64

func (r *eventRing) add(t time.Time, msg string, attrs []any) {
	var b strings.Builder
	b.WriteString(t.UTC().Format(time.RFC3339Nano))
	b.WriteString(" ")
	b.WriteString(msg)
	for i := 0; i+1 < len(attrs); i += 2 {
		fmt.Fprintf(&b, " %v=%v", attrs[i], attrs[i+1])
	}
	if len(r.lines) < eventRingSize {
		r.lines = append(r.lines, b.String())
		return
	}
	r.lines[r.next] = b.String()
	r.next = (r.next + 1) % eventRingSize
}

func (r *eventRing) all() []string {
	out := make([]string, 0, len(r.lines))
	out = append(out, r.lines[r.next:]...)
	return append(out, r.lines[:r.next]...)
}

// cmdCollectSystemLogs returns {"system_logs": base64(tar.gz)} as IPA does,
// with the agent's log, its inventory and its command history.
func cmdCollectSystemLogs(_ context.Context, a *Agent, _ params) (any, error) {
	a.mu.Lock()
	logText := strings.Join(a.events.all(), "\n") + "\n"
	a.mu.Unlock()
	inv, _ := json.MarshalIndent(a.Inventory(), "", "  ")
	cmds, _ := json.MarshalIndent(a.Commands(), "", "  ")
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	now := time.Now()
	for _, f := range []struct {
		name string
		data []byte
	}{{"ironlab-agent.log", []byte(logText)}, {"inventory.json", inv}, {"commands.json", cmds}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return map[string]string{"system_logs": base64.StdEncoding.EncodeToString(buf.Bytes())}, nil
}
