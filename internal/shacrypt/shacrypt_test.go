package shacrypt

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/ironlab/ironlab/scenarios/labtest"
)

// The test vectors of Drepper's SHA-crypt specification.
func TestCryptSpecVectors(t *testing.T) {
	tests := []struct{ setting, password, want string }{
		{"$6$saltstring", "Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
		{"$6$rounds=10000$saltstringsaltstring", "Hello world!", "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
		{"$6$rounds=5000$toolongsaltstring", "This is just a test", "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
		{"$6$rounds=1400$anotherlongsaltstring", "a very much longer text to encrypt.  This one even stretches over morethan one line.", "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"},
		{"$6$rounds=77777$short", "we have a short salt string but not a short password", "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"},
		{"$6$rounds=123456$asaltof16chars..", "a short string", "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"},
		{"$6$rounds=10$roundstoolow", "the minimum number is still observed", "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."},
		{"$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"},
		{"$5$rounds=10000$saltstringsaltstring", "Hello world!", "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"},
		{"$5$rounds=5000$toolongsaltstring", "This is just a test", "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"},
		{"$5$rounds=1400$anotherlongsaltstring", "a very much longer text to encrypt.  This one even stretches over morethan one line.", "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1"},
		{"$5$rounds=10$roundstoolow", "the minimum number is still observed", "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"},
	}
	for _, tc := range tests {
		got, err := Crypt(tc.password, tc.setting)
		if err != nil || got != tc.want {
			t.Errorf("Crypt(%q, %q) = %q, %v; want %q", tc.password, tc.setting, got, err, tc.want)
		}
		if !Verify(tc.want, tc.password) || Verify(tc.want, tc.password+"x") {
			t.Errorf("Verify(%q) does not tell %q from a wrong password", tc.want, tc.password)
		}
	}
	if _, err := Crypt("pw", "$1$md5salt"); !errors.Is(err, ErrBadHash) {
		t.Errorf("Crypt with an MD5 setting: %v, want ErrBadHash", err)
	}
}

// Hash gives what Python's crypt (Ironic's hash_password) accepts as the
// same password's hash, with a fresh 16-character salt each time.
func TestHashAgreesWithPythonCrypt(t *testing.T) {
	for method, prefix := range map[string]string{SHA256: "$5$", SHA512: "$6$"} {
		t.Run(method, func(t *testing.T) { testHashAgrees(t, method, prefix) })
	}
	if _, err := Hash("md5", "pw"); err == nil {
		t.Error("Hash(md5) succeeded")
	}
}

func testHashAgrees(t *testing.T, method, prefix string) {
	h1, err := Hash(method, "s3cret pass")
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := Hash(method, "s3cret pass")
	if h1 == h2 || !strings.HasPrefix(h1, prefix) || len(strings.Split(h1, "$")[2]) != 16 {
		t.Errorf("hashes %q and %q: want "+prefix+", a 16-character salt, a new salt each time", h1, h2)
	}
	if !Verify(h1, "s3cret pass") {
		t.Errorf("Verify(%q) refuses its own password", h1)
	}
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-W", "ignore", "-c", "import crypt").Run(); err != nil {
		labtest.Missing(t, "python3's crypt module", "apt-get install -y --no-install-recommends python3")
	}
	out, err := exec.Command(py, "-W", "ignore", "-c", "import crypt,sys; print(crypt.crypt(sys.argv[1], sys.argv[2]))", "s3cret pass", h1).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 crypt: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != h1 {
		t.Errorf("python3 crypt.crypt(pw, %q) = %q; ours differs", h1, got)
	}
}
