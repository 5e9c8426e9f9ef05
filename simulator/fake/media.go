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
// over HTTP; anything but 200 is a boot failure.
func fetchImage(ctx context.Context, imageURL string) (int64, string, error) {
	if err := loopbackURL(imageURL); err != nil {
		return 0, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, imageURL, nil)
	if err != nil {
		return 0, "", err
	}
	c := &http.Client{Transport: &http.Transport{
		// The lab's image servers use self-signed certificates; a
		// firmware's virtual media client takes what the BMC gives it.
		TLSClientConfig: insecureTLS(),
		DialContext:     (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("fetch: HTTP %s", resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(resp.Body, maxCDImage+1))
	if err != nil {
		return n, "", fmt.Errorf("fetch: read: %w", err)
	}
	if n == 0 {
		return 0, "", fmt.Errorf("fetch: empty image")
	}
	if n > maxCDImage {
		return n, "", fmt.Errorf("fetch: image larger than %d bytes", int64(maxCDImage))
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } //nolint:gosec // lab-local, loopback only
