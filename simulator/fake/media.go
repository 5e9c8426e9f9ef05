package fake

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"time"
)

// maxCDImage bounds what a virtual CD boot reads: an agent ISO is some
// hundred MB; the fake machine only hashes it.
const maxCDImage = 2 << 30

// loopbackURL accepts http(s) URLs on loopback only: the lab never sends
// traffic elsewhere, whatever a client puts in a virtual media request.
func loopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("image URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("image URL %q: want http or https", raw)
	}
	h := u.Hostname()
	if h == "localhost" {
		return nil
	}
	a, err := netip.ParseAddr(h)
	if err != nil || !a.IsLoopback() {
		return fmt.Errorf("image URL %q: host must be a loopback address", raw)
	}
	return nil
}

// fetchImage reads a virtual CD image as firmware would: the whole of it,
// over HTTP; anything but 200 is a boot failure. An ISO 9660 image's boot
// loader command line comes back too ("" for other images).
func fetchImage(ctx context.Context, imageURL string) (n int64, sum, cmdline string, err error) {
	if err := loopbackURL(imageURL); err != nil {
		return 0, "", "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, imageURL, nil)
	if err != nil {
		return 0, "", "", err
	}
	c := &http.Client{Transport: &http.Transport{
		// The lab's image servers use self-signed certificates; a
		// firmware's virtual media client takes what the BMC gives it.
		TLSClientConfig: insecureTLS(),
		DialContext:     (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", "", fmt.Errorf("fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, "", "", fmt.Errorf("fetch: HTTP %s", resp.Status)
	}
	f, err := os.CreateTemp("", "ironlab-virtual-cd-*.img")
	if err != nil {
		return 0, "", "", fmt.Errorf("fetch: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	n, err = io.Copy(io.MultiWriter(h, f), io.LimitReader(resp.Body, maxCDImage+1))
	if err != nil {
		return n, "", "", fmt.Errorf("fetch: read: %w", err)
	}
	if n == 0 {
		return 0, "", "", fmt.Errorf("fetch: empty image")
	}
	if n > maxCDImage {
		return n, "", "", fmt.Errorf("fetch: image larger than %d bytes", int64(maxCDImage))
	}
	cmdline, _ = isoCmdline(f) // not an ISO, or one without a boot loader line: nothing to pass on
	return n, hex.EncodeToString(h.Sum(nil)), cmdline, nil
}

func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } //nolint:gosec // lab-local, loopback only
