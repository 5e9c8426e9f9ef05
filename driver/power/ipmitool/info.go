package ipmitool

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ironlab/ironlab/driver/power"
)

// Info is a node's IPMI driver_info: ipmi_address, ipmi_port (default 623),
// ipmi_username, ipmi_password, ipmi_protocol_version ("2.0" or "1.5") and
// ipmi_cipher_suite. The native interface reads the same fields.
type Info struct {
	Address         string
	Port            int
	Username        string
	Password        string
	ProtocolVersion string
	CipherSuite     string // empty: let ipmitool choose
}

// Addr is the BMC's host:port, the name errors use.
func (i Info) Addr() string {
	if a, err := netip.ParseAddr(i.Address); err == nil {
		return netip.AddrPortFrom(a, uint16(i.Port)).String()
	}
	return i.Address + ":" + strconv.Itoa(i.Port)
}

// ParseInfo reads and checks a node's IPMI driver_info. JSON numbers and
// strings are both accepted for the port and cipher suite.
func ParseInfo(info power.DriverInfo) (Info, error) {
	var i Info
	var err error
	if i.Address, err = str(info, "ipmi_address"); err != nil {
		return i, err
	}
	if i.Address == "" {
		return i, fmt.Errorf("%w: ipmi_address", power.ErrMissingInfo)
	}
	if i.Username, err = str(info, "ipmi_username"); err != nil {
		return i, err
	}
	if i.Password, err = str(info, "ipmi_password"); err != nil {
		return i, err
	}
	port, err := str(info, "ipmi_port")
	if err != nil {
		return i, err
	}
	i.Port = 623
	if port != "" {
		if i.Port, err = strconv.Atoi(port); err != nil || i.Port < 1 || i.Port > 65535 {
			return i, fmt.Errorf("driver_info ipmi_port %q: want 1..65535", port)
		}
	}
	if i.ProtocolVersion, err = str(info, "ipmi_protocol_version"); err != nil {
		return i, err
	}
	switch i.ProtocolVersion {
	case "":
		i.ProtocolVersion = "2.0"
	case "2.0", "1.5":
	default:
		return i, fmt.Errorf("driver_info ipmi_protocol_version %q: want 2.0 or 1.5", i.ProtocolVersion)
	}
	if i.CipherSuite, err = str(info, "ipmi_cipher_suite"); err != nil {
		return i, err
	}
	if i.CipherSuite != "" {
		if n, err := strconv.Atoi(i.CipherSuite); err != nil || n < 0 || n > 255 {
			return i, fmt.Errorf("driver_info ipmi_cipher_suite %q: want a suite number", i.CipherSuite)
		}
	}
	return i, nil
}

func str(info power.DriverInfo, key string) (string, error) {
	v, ok := info[key]
	if !ok || v == nil {
		return "", nil
	}
	switch x := v.(type) {
	case string:
		return strings.TrimSpace(x), nil
	case float64:
		if x != float64(int64(x)) {
			return "", fmt.Errorf("driver_info %s: %v is not an integer", key, x)
		}
		return strconv.FormatInt(int64(x), 10), nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case uint16:
		return strconv.Itoa(int(x)), nil
	}
	return "", fmt.Errorf("driver_info %s: unexpected %T", key, v)
}
