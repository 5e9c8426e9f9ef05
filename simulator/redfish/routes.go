package redfish

import (
	"net/http"
)

func (s *Service) routes() {
	s.mux = http.NewServeMux()
	seen := map[string]bool{}
	h := func(pattern string, flags int, fn handler) { s.handle(pattern, flags, fn, seen) }
	const sys = "/redfish/v1/Systems/{id}"

	h("GET /redfish", public, s.getVersions)
	h("GET /redfish/v1/{$}", public, s.getRoot)
	h("GET /redfish/v1/odata", public, s.getOData)
	h("GET /redfish/v1/$metadata", public, s.getMetadata)

	h("GET /redfish/v1/Systems", 0, s.listOf("/redfish/v1/Systems", "#ComputerSystemCollection.ComputerSystemCollection", "Computer System Collection"))
	h("GET "+sys, onSystem, s.getSystem)
	h("PATCH "+sys, onSystem, s.patchSystem)
	h("POST "+sys+"/Actions/ComputerSystem.Reset", onSystem, s.reset)
	h("GET "+sys+"/Bios", onSystem, s.getBios)
	h("GET "+sys+"/Bios/Settings", onSystem, s.getBiosSettings)
	h("PATCH "+sys+"/Bios/Settings", onSystem, s.patchBiosSettings)
	h("POST "+sys+"/Bios/Actions/Bios.ResetBios", onSystem, s.resetBios)
	h("GET "+sys+"/SecureBoot", onSystem, s.getSecureBoot)
	h("PATCH "+sys+"/SecureBoot", onSystem, s.patchSecureBoot)
	h("POST "+sys+"/SecureBoot/Actions/SecureBoot.ResetKeys", onSystem, s.resetKeys)
	h("GET "+sys+"/Processors", onSystem, s.getProcessors)
	h("GET "+sys+"/Processors/{proc}", onSystem, s.getProcessor)
	h("GET "+sys+"/SimpleStorage", onSystem, s.getSimpleStorageCollection)
	h("GET "+sys+"/SimpleStorage/{st}", onSystem, s.getSimpleStorage)
	h("GET "+sys+"/Storage", onSystem, s.getStorageCollection)
	h("GET "+sys+"/Storage/{st}", onSystem, s.getStorage)
	h("GET "+sys+"/Storage/{st}/Drives/{drive}", onSystem, s.getDrive)
	h("GET "+sys+"/EthernetInterfaces", onSystem, s.getNICs)
	h("GET "+sys+"/EthernetInterfaces/{nic}", onSystem, s.getNIC)

	h("GET /redfish/v1/Chassis", 0, s.listOf("/redfish/v1/Chassis", "#ChassisCollection.ChassisCollection", "Chassis Collection"))
	h("GET /redfish/v1/Chassis/{id}", onSystem, s.getChassis)
	h("GET /redfish/v1/Managers", 0, s.listOf("/redfish/v1/Managers", "#ManagerCollection.ManagerCollection", "Manager Collection"))
	h("GET /redfish/v1/Managers/{id}", onSystem, s.getManager)

	// Virtual media under the manager and under the system: {under} is
	// Managers or Systems.
	for _, under := range []string{"Managers", "Systems"} {
		vm := "/redfish/v1/" + under + "/{id}/VirtualMedia"
		h("GET "+vm, onSystem, s.withUnder(under, s.getMediaCollection))
		h("GET "+vm+"/{dev}", onSystem, s.withUnder(under, s.getMedia))
		h("PATCH "+vm+"/{dev}", onSystem, s.withUnder(under, s.patchMedia))
		h("POST "+vm+"/{dev}/Actions/VirtualMedia.InsertMedia", onSystem, s.withUnder(under, s.insertMedia))
		h("POST "+vm+"/{dev}/Actions/VirtualMedia.EjectMedia", onSystem, s.withUnder(under, s.ejectMedia))
	}

	h("GET /redfish/v1/UpdateService", 0, s.getUpdateService)
	h("POST /redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate", 0, s.simpleUpdate)
	h("GET /redfish/v1/UpdateService/FirmwareInventory", 0, s.getFirmwareInventory)
	h("GET /redfish/v1/UpdateService/FirmwareInventory/{fw}", 0, s.getFirmware)
	h("GET /redfish/v1/TaskService", 0, s.getTaskService)
	h("GET /redfish/v1/TaskService/Tasks", 0, s.getTasks)
	h("GET /redfish/v1/TaskService/Tasks/{task}", 0, s.getTask)
	h("GET /redfish/v1/TaskService/TaskMonitors/{task}", 0, s.getTaskMonitor)

	h("GET /redfish/v1/SessionService", 0, s.getSessionService)
	h("GET "+sessionsPath, 0, s.getSessions)
	h("POST "+sessionsPath, public, s.login)
	h("GET "+sessionsPath+"/{sid}", 0, s.getSession)
	h("DELETE "+sessionsPath+"/{sid}", 0, s.logout)

	// Anything else: 404 in the Redfish shape.
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.serve(w, r, public, func(c *call) (*result, *rfError) { return nil, notFound(r.URL.Path) })
	})
}

// withUnder records which tree a virtual media request came through, so
// the answer's @odata.id is the URI asked for.
func (s *Service) withUnder(under string, fn handler) handler {
	return func(c *call) (*result, *rfError) {
		c.r.SetPathValue("under", under)
		return fn(c)
	}
}

func (s *Service) listOf(path, typ, name string) handler {
	return func(c *call) (*result, *rfError) {
		ids := s.systemIDs()
		for i, id := range ids {
			ids[i] = path + "/" + id
		}
		return ok(collection(path, typ, name, ids))
	}
}

func (s *Service) getVersions(c *call) (*result, *rfError) {
	return ok(map[string]any{"v1": "/redfish/v1/"})
}

func (s *Service) getRoot(c *call) (*result, *rfError) {
	v := odata("/redfish/v1/", "#ServiceRoot.v1_5_0.ServiceRoot")
	v["Id"] = "RootService"
	v["Name"] = "ironlab Redfish Service"
	v["RedfishVersion"] = "1.8.0"
	v["UUID"] = s.uuid
	v["Vendor"] = "ironlab"
	v["Product"] = "ironlab virtual BMC"
	v["Systems"] = link("/redfish/v1/Systems")
	v["Chassis"] = link("/redfish/v1/Chassis")
	v["Managers"] = link("/redfish/v1/Managers")
	v["UpdateService"] = link("/redfish/v1/UpdateService")
	v["TaskService"] = link("/redfish/v1/TaskService")
	v["SessionService"] = link("/redfish/v1/SessionService")
	v["Links"] = map[string]any{"Sessions": link(sessionsPath)}
	return ok(v)
}

func (s *Service) getOData(c *call) (*result, *rfError) {
	names := []string{"Systems", "Chassis", "Managers", "UpdateService", "TaskService", "SessionService"}
	vals := []any{map[string]any{"name": "Service", "kind": "Singleton", "url": "/redfish/v1/"}}
	for _, n := range names {
		vals = append(vals, map[string]any{"name": n, "kind": "Singleton", "url": "/redfish/v1/" + n})
	}
	return ok(map[string]any{"@odata.context": "/redfish/v1/$metadata", "value": vals})
}

// getMetadata serves a minimal CSDL document: the schemas are DMTF's, named
// by reference.
func (s *Service) getMetadata(c *call) (*result, *rfError) {
	c.w.Header().Set("Content-Type", "application/xml")
	c.w.WriteHeader(http.StatusOK)
	_, _ = c.w.Write([]byte(metadataXML))
	return nil, nil
}

const metadataXML = `<?xml version="1.0" encoding="UTF-8"?>
<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">
  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/ServiceRoot_v1.xml">
    <edmx:Include Namespace="ServiceRoot.v1_5_0"/>
  </edmx:Reference>
  <edmx:DataServices>
    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Service">
      <EntityContainer Name="Service" Extends="ServiceRoot.v1_5_0.ServiceContainer"/>
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>
`
