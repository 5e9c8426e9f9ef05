package libvirtvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"

	"github.com/digitalocean/go-libvirt"

	"github.com/ironlab/ironlab/simulator"
)

// A managed domain has a virtual CD drive (IDE, hdc), which a Redfish BMC's
// InsertMedia fills, as sushy-tools' libvirt driver does: the image is
// fetched over HTTP when it is inserted (a failed fetch fails the insert),
// kept next to the disk, and attached as the drive's source, in the
// definition the next start uses and, when the domain runs, in the running
// guest (a media change). Booting simulator.BootCD starts the domain from
// that drive (SeaBIOS, El Torito).

var (
	_ simulator.VirtualMedia      = (*Machine)(nil)
	_ simulator.BootDeviceSupport = (*Machine)(nil)
)

// SupportsBootDevice: network and disk always, the CD on managed domains,
// never firmware setup (SeaBIOS has no setup to stop in).
func (m *Machine) SupportsBootDevice(dev simulator.BootDevice) bool {
	switch dev {
	case simulator.BootNetwork, simulator.BootDisk:
		return true
	case simulator.BootCD:
		return m.managed && m.cdPath != ""
	}
	return false
}

var errNotISO = errors.New("not an ISO 9660 image (no CD001 volume descriptor at sector 16)")

// maxISO bounds a fetched CD image.
const maxISO = 4 << 30

// InsertMedia fetches the ISO at imageURL (on the host's loopback) and puts
// it in the domain's CD drive.
func (m *Machine) InsertMedia(ctx context.Context, imageURL string) error {
	if !m.managed || m.cdPath == "" {
		return fmt.Errorf("insert virtual CD into %s: ironlab did not define this domain, it has no managed CD drive", m.dom.Name)
	}
	if err := loopbackURL(imageURL); err != nil {
		return fmt.Errorf("insert virtual CD into %s: %w", m.dom.Name, err)
	}
	// A file of its own per insert: two inserts at once do not mix.
	tmp, err := os.CreateTemp(filepath.Dir(m.cdPath), filepath.Base(m.cdPath)+".*.part")
	if err != nil {
		return fmt.Errorf("insert virtual CD into %s: %w", m.dom.Name, err)
	}
	part := tmp.Name()
	tmp.Close()
	defer os.Remove(part)
	if err := fetchISO(ctx, imageURL, part); err != nil {
		return fmt.Errorf("insert virtual CD into %s: %w", m.dom.Name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := os.Rename(part, m.cdPath); err != nil {
		return fmt.Errorf("insert virtual CD into %s: %w", m.dom.Name, err)
	}
	m.cd = m.cdPath
	if err := m.changeCD(ctx); err != nil {
		return fmt.Errorf("insert virtual CD into %s: %w", m.dom.Name, err)
	}
	m.log.Info("virtual CD inserted", "image", imageURL, "file", m.cdPath)
	return nil
}

// EjectMedia empties the CD drive.
func (m *Machine) EjectMedia(ctx context.Context) error {
	if !m.managed || m.cdPath == "" {
		return fmt.Errorf("eject the virtual CD of %s: ironlab did not define this domain, it has no managed CD drive", m.dom.Name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cd = ""
	if err := m.changeCD(ctx); err != nil {
		return fmt.Errorf("eject the virtual CD of %s: %w", m.dom.Name, err)
	}
	if err := os.Remove(m.cdPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("eject the virtual CD of %s: %w", m.dom.Name, err)
	}
	return nil
}

// Media is the host file in the CD drive ("" when empty).
func (m *Machine) Media() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cd
}

// changeCD writes the drive's content into the definition and, when the
// domain runs, into the running guest. m.mu is held.
func (m *Machine) changeCD(ctx context.Context) error {
	cfg := m.persistent
	if m.oneTime != nil {
		cfg = *m.oneTime
	}
	if err := m.rewrite(ctx, cfg, false); err != nil {
		return err
	}
	p, err := m.Power(ctx)
	if err != nil || p != simulator.PowerOn {
		return err
	}
	cd := cdromDisk(m.cd)
	x, err := cd.Marshal()
	if err != nil {
		return fmt.Errorf("render the CD drive: %w", err)
	}
	return call(ctx, m.c, m.domainErr("change the CD of running"), func() error {
		return m.c.lv.DomainUpdateDeviceFlags(m.dom, x, libvirt.DomainDeviceModifyLive)
	})
}

// loopbackURL accepts http(s) URLs on the host's loopback only (the
// network rule: the lab sends nothing elsewhere).
func loopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("image URL %q: want an http(s) URL", raw)
	}
	h := u.Hostname()
	if h == "localhost" {
		return nil
	}
	if a, err := netip.ParseAddr(h); err == nil && a.IsLoopback() {
		return nil
	}
	return fmt.Errorf("image URL %q: the lab fetches from loopback addresses only", raw)
}

// fetchISO downloads an ISO 9660 image to path, refusing other content.
func fetchISO(ctx context.Context, imageURL, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, imageURL, nil)
	if err != nil {
		return err
	}
	// Loopback only: no proxy from the environment.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: (&net.Dialer{}).DialContext}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", imageURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: %s", imageURL, resp.Status)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil { // libvirt's qemu user reads it
		f.Close()
		return err
	}
	n, err := io.Copy(f, io.LimitReader(resp.Body, maxISO+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fetch %s: %w", imageURL, err)
	}
	if n > maxISO {
		return fmt.Errorf("fetch %s: over %d bytes", imageURL, int64(maxISO))
	}
	if err := checkISO(path); err != nil {
		return fmt.Errorf("%s: %w", imageURL, err)
	}
	return nil
}

// checkISO says whether the file holds an ISO 9660 file system (the
// "CD001" of the first volume descriptor, sector 16).
func checkISO(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 5)
	if _, err := f.ReadAt(b, 16*2048+1); err != nil || string(b) != "CD001" {
		return errNotISO
	}
	return nil
}
