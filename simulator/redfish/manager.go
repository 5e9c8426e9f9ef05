package redfish

import (
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/ironlab/ironlab/simulator"
)

func (s *Service) getManager(c *call) (*result, *rfError) {
	id := c.sys.id
	base := "/redfish/v1/Managers/" + id
	_, bmcVersion := c.sys.FirmwareVersions()
	v := odata(base, "#Manager.v1_10_0.Manager")
	v["Id"] = id
	v["Name"] = "BMC of " + c.sys.m.Name()
	v["ManagerType"] = "BMC"
	v["FirmwareVersion"] = bmcVersion
	v["Model"] = "ironlab virtual BMC"
	v["UUID"] = c.sys.m.UUID()
	v["PowerState"] = "On"
	v["Status"] = statusOK
	v["VirtualMedia"] = link(base + "/VirtualMedia")
	v["Links"] = map[string]any{
		"ManagerForServers": []any{link(c.sys.Path())},
		"ManagerForChassis": []any{link("/redfish/v1/Chassis/" + id)},
	}
	return ok(v)
}

func (s *Service) getChassis(c *call) (*result, *rfError) {
	id := c.sys.id
	ctx, cancel := s.machineCtx(c.r)
	defer cancel()
	p, err := c.sys.m.Power(ctx)
	if err != nil {
		return nil, internal("read power of %s: %v", c.sys.m.Name(), err)
	}
	hw := c.sys.m.Hardware()
	v := odata("/redfish/v1/Chassis/"+id, "#Chassis.v1_10_0.Chassis")
	v["Id"] = id
	v["Name"] = "Chassis of " + c.sys.m.Name()
	v["ChassisType"] = "RackMount"
	v["Manufacturer"] = hw.Vendor
	v["Model"] = hw.Product
	v["SerialNumber"] = hw.SerialNumber
	v["PowerState"] = powerName(p)
	v["Status"] = statusOK
	v["Links"] = map[string]any{
		"ComputerSystems": []any{link(c.sys.Path())},
		"ManagedBy":       []any{link("/redfish/v1/Managers/" + id)},
	}
	return ok(v)
}

// Virtual media lives under the manager (sushy 4.3) and, for newer Ironic,
// under the system too; both paths are the same two drives.

func (s *Service) mediaBase(c *call) string {
	if c.r.PathValue("under") == "Systems" {
		return c.sys.Path() + "/VirtualMedia"
	}
	return "/redfish/v1/Managers/" + c.sys.id + "/VirtualMedia"
}

func (s *Service) getMediaCollection(c *call) (*result, *rfError) {
	base := s.mediaBase(c)
	return ok(collection(base, "#VirtualMediaCollection.VirtualMediaCollection", "Virtual Media Services",
		[]string{base + "/Cd", base + "/Floppy"}))
}

// drive is the named drive; sys.mu is held by the caller.
func (sys *System) drive(name string) *media {
	switch name {
	case "Cd":
		return &sys.cd
	case "Floppy":
		return &sys.floppy
	}
	return nil
}

func (s *Service) mediaView(c *call, dev string) map[string]any {
	base := s.mediaBase(c) + "/" + dev
	c.sys.mu.Lock()
	d := *c.sys.drive(dev)
	c.sys.mu.Unlock()
	v := odata(base, "#VirtualMedia.v1_3_0.VirtualMedia")
	v["Id"] = dev
	v["Name"] = "Virtual " + dev
	if dev == "Cd" {
		v["MediaTypes"] = []string{"CD", "DVD"}
	} else {
		v["MediaTypes"] = []string{"Floppy", "USBStick"}
	}
	v["Inserted"] = d.inserted
	v["WriteProtected"] = d.writeProtected
	v["VerifyCertificate"] = d.verifyCert
	if d.image != "" {
		v["Image"] = d.image
		u, _ := url.Parse(d.image)
		name := ""
		if u != nil {
			name = lastSegment(u.Path)
		}
		v["ImageName"] = name
		v["ConnectedVia"] = "URI"
		v["TransferProtocolType"] = d.protocol
	} else {
		v["Image"] = nil
		v["ImageName"] = ""
		v["ConnectedVia"] = "NotConnected"
	}
	v["TransferProtocolType@Redfish.AllowableValues"] = []string{"HTTP", "HTTPS"}
	v["Actions"] = map[string]any{
		"#VirtualMedia.InsertMedia": map[string]any{"target": base + "/Actions/VirtualMedia.InsertMedia"},
		"#VirtualMedia.EjectMedia":  map[string]any{"target": base + "/Actions/VirtualMedia.EjectMedia"},
	}
	return v
}

func lastSegment(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

func mediaDev(c *call) (string, *rfError) {
	dev := c.r.PathValue("dev")
	if dev != "Cd" && dev != "Floppy" {
		return "", notFound(c.r.URL.Path)
	}
	return dev, nil
}

func (s *Service) getMedia(c *call) (*result, *rfError) {
	dev, e := mediaDev(c)
	if e != nil {
		return nil, e
	}
	return ok(s.mediaView(c, dev))
}

// mediaRequest is an insert, from InsertMedia or PATCH, checked.
type mediaRequest struct {
	image          *string // nil: not given; "": eject
	inserted       *bool
	writeProtected *bool
	protocol       string
	verifyCert     *bool
}

func parseMedia(obj map[string]json.RawMessage, action string) (mediaRequest, *rfError) {
	var q mediaRequest
	bad := func(name string, raw json.RawMessage) *rfError {
		if action != "" {
			return paramFormat(action, name, string(raw))
		}
		return propertyType("#/"+name, name, string(raw))
	}
	if raw, ok := obj["Image"]; ok {
		var img *string
		if err := json.Unmarshal(raw, &img); err != nil {
			return q, bad("Image", raw)
		}
		if img == nil {
			empty := ""
			img = &empty
		}
		if *img != "" {
			u, err := url.Parse(*img)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return q, bad("Image", raw)
			}
			q.protocol = "HTTP"
			if u.Scheme == "https" {
				q.protocol = "HTTPS"
			}
		} else if action != "" {
			return q, bad("Image", raw)
		}
		q.image = img
	} else if action != "" {
		return q, paramMissing(action, "Image")
	}
	for _, f := range []struct {
		name string
		dst  **bool
	}{{"Inserted", &q.inserted}, {"WriteProtected", &q.writeProtected}, {"VerifyCertificate", &q.verifyCert}} {
		name, dst := f.name, f.dst
		raw, ok := obj[name]
		if !ok {
			continue
		}
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return q, bad(name, raw)
		}
		*dst = &b
	}
	if raw, ok := obj["TransferProtocolType"]; ok {
		var p string
		if err := json.Unmarshal(raw, &p); err != nil {
			return q, bad("TransferProtocolType", raw)
		}
		if p != "HTTP" && p != "HTTPS" {
			if action != "" {
				return q, paramValueNotInList(action, "TransferProtocolType", p)
			}
			return q, propertyNotInList("#/TransferProtocolType", "TransferProtocolType", p)
		}
		if q.protocol != "" && p != q.protocol {
			if action != "" {
				return q, paramValueNotInList(action, "TransferProtocolType", p)
			}
			return q, propertyNotInList("#/TransferProtocolType", "TransferProtocolType", p)
		}
	}
	return q, nil
}

// applyMedia inserts or ejects; the CD reaches the machine's drive.
func (s *Service) applyMedia(c *call, dev string, q mediaRequest) *rfError {
	eject := q.image != nil && *q.image == ""
	if q.inserted != nil && !*q.inserted && q.image == nil {
		eject = true
	}
	if !eject && q.image != nil && c.faults.InsertMediaFail {
		return errorf(http.StatusInternalServerError, "InternalError", nil, nil,
			"Injected fault: the virtual media service could not connect %s.", *q.image)
	}
	ctx, cancel := s.machineCtx(c.r)
	defer cancel()
	if dev == "Cd" {
		if vm, ok := c.sys.m.(simulator.VirtualMedia); ok {
			var err error
			if eject {
				err = vm.EjectMedia(ctx)
			} else if q.image != nil {
				err = vm.InsertMedia(ctx, *q.image)
			}
			if err != nil {
				return errorf(http.StatusBadRequest, "ActionParameterValueFormatError", []string{"#/Image"}, nil,
					"The virtual CD of %s refused the image: %v.", c.sys.m.Name(), err)
			}
		}
	}
	c.sys.mu.Lock()
	defer c.sys.mu.Unlock()
	d := c.sys.drive(dev)
	switch {
	case eject:
		*d = media{writeProtected: true}
	case q.image != nil:
		d.image, d.protocol, d.inserted = *q.image, q.protocol, true
		if q.inserted != nil {
			d.inserted = *q.inserted
		}
	}
	if q.writeProtected != nil {
		d.writeProtected = *q.writeProtected
	}
	if q.verifyCert != nil {
		d.verifyCert = *q.verifyCert
	}
	return nil
}

func (s *Service) insertMedia(c *call) (*result, *rfError) {
	const action = "VirtualMedia.InsertMedia"
	dev, e := mediaDev(c)
	if e != nil {
		return nil, e
	}
	obj, e := readObject(c, false)
	if e != nil {
		return nil, e
	}
	if e := onlyKeysAction(obj, action, "Image", "Inserted", "WriteProtected", "TransferProtocolType", "TransferMethod", "UserName", "Password"); e != nil {
		return nil, e
	}
	if raw, ok := obj["TransferMethod"]; ok {
		var m string
		if err := json.Unmarshal(raw, &m); err != nil || (m != "Stream" && m != "Upload") {
			return nil, paramValueNotInList(action, "TransferMethod", string(raw))
		}
	}
	for _, k := range []string{"UserName", "Password"} {
		if raw, ok := obj[k]; ok {
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, paramFormat(action, k, string(raw))
			}
		}
	}
	q, e := parseMedia(obj, action)
	if e != nil {
		return nil, e
	}
	if e := s.applyMedia(c, dev, q); e != nil {
		return nil, e
	}
	return noContent()
}

func (s *Service) ejectMedia(c *call) (*result, *rfError) {
	dev, e := mediaDev(c)
	if e != nil {
		return nil, e
	}
	obj, e := readObject(c, true)
	if e != nil {
		return nil, e
	}
	if e := onlyKeysAction(obj, "VirtualMedia.EjectMedia"); e != nil {
		return nil, e
	}
	empty := ""
	if e := s.applyMedia(c, dev, mediaRequest{image: &empty}); e != nil {
		return nil, e
	}
	return noContent()
}

func (s *Service) patchMedia(c *call) (*result, *rfError) {
	dev, e := mediaDev(c)
	if e != nil {
		return nil, e
	}
	obj, e := readObject(c, false)
	if e != nil {
		return nil, e
	}
	if e := checkETag(c.r, s.mediaView(c, dev)); e != nil {
		return nil, e
	}
	if e := onlyKeys(obj, "#", "Image", "Inserted", "WriteProtected", "TransferProtocolType", "VerifyCertificate"); e != nil {
		return nil, e
	}
	q, e := parseMedia(obj, "")
	if e != nil {
		return nil, e
	}
	if e := s.applyMedia(c, dev, q); e != nil {
		return nil, e
	}
	return noContent()
}
