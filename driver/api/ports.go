package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/ironlab/ironlab/driver/conductor"
	"github.com/ironlab/ironlab/driver/store"
)

func portDoc(c *gin.Context, p *store.Port, detail bool) map[string]any {
	d := map[string]any{"uuid": p.UUID, "address": p.Address, "links": links(c, "ports", p.UUID)}
	if !detail {
		return d
	}
	d["node_uuid"] = p.NodeUUID
	d["pxe_enabled"] = p.PXEEnabled
	d["extra"] = emptyIfNil(p.Extra)
	d["local_link_connection"] = map[string]any{}
	d["portgroup_uuid"] = nil
	d["created_at"] = ts(p.CreatedAt)
	d["updated_at"] = ts(p.UpdatedAt)
	return d
}

type portCreate struct {
	UUID                *string        `json:"uuid"`
	Address             *string        `json:"address"`
	NodeUUID            *string        `json:"node_uuid"`
	PXEEnabled          *bool          `json:"pxe_enabled"`
	Extra               map[string]any `json:"extra"`
	LocalLinkConnection map[string]any `json:"local_link_connection"`
}

func (s *Server) createPort(c *gin.Context) {
	var req portCreate
	if !decode(c, &req, false) {
		return
	}
	if req.Address == nil {
		fail(c, http.StatusBadRequest, "Mandatory field missing: address")
		return
	}
	if req.NodeUUID == nil {
		fail(c, http.StatusBadRequest, "Mandatory field missing: node_uuid")
		return
	}
	mac := store.NormalizeMAC(*req.Address)
	if mac == "" {
		fail(c, http.StatusBadRequest, fmt.Sprintf("Expected a MAC address but received %s.", *req.Address))
		return
	}
	n, err := s.c.GetNode(c.Request.Context(), *req.NodeUUID)
	if err != nil {
		if errors.Is(err, conductor.ErrNotFound) {
			// Ironic re-codes NodeNotFound to 400 on port create.
			fail(c, http.StatusBadRequest, fmt.Sprintf("Node %s could not be found (field \"node_uuid\").", *req.NodeUUID))
			return
		}
		failErr(c, err)
		return
	}
	p := &store.Port{Address: mac, NodeUUID: n.UUID, PXEEnabled: true, Extra: req.Extra}
	if req.PXEEnabled != nil {
		p.PXEEnabled = *req.PXEEnabled
	}
	if req.UUID != nil {
		u, err := uuid.Parse(*req.UUID)
		if err != nil {
			fail(c, http.StatusBadRequest, fmt.Sprintf("Invalid UUID for field \"uuid\": %q", *req.UUID))
			return
		}
		p.UUID = u.String()
	}
	if err := s.c.Store().CreatePort(c.Request.Context(), p); err != nil {
		if errors.Is(err, store.ErrDuplicate) {
			fail(c, http.StatusConflict, fmt.Sprintf("A port with MAC address %s already exists.", mac))
			return
		}
		failErr(c, err)
		return
	}
	c.Header("Location", baseURL(c)+"/v1/ports/"+p.UUID)
	c.JSON(http.StatusCreated, portDoc(c, p, true))
}

func (s *Server) listPorts(c *gin.Context) {
	detail := false
	if d := c.Query("detail"); d != "" {
		b, err := strconv.ParseBool(d)
		if err != nil {
			fail(c, http.StatusBadRequest, fmt.Sprintf("Invalid value for query parameter \"detail\": %q", d))
			return
		}
		detail = b
	}
	s.listPortsAs(c, detail, "")
}

func (s *Server) listPortsDetail(c *gin.Context) { s.listPortsAs(c, true, "") }

func (s *Server) nodePorts(c *gin.Context) {
	n, ok := s.node(c)
	if !ok {
		return
	}
	s.listPortsAs(c, c.Query("detail") == "true", n.UUID)
}

func (s *Server) listPortsAs(c *gin.Context, detail bool, nodeUUID string) {
	f := store.PortFilter{NodeUUID: nodeUUID}
	for _, q := range []string{"node", "node_uuid"} {
		if ident := c.Query(q); ident != "" {
			n, err := s.c.GetNode(c.Request.Context(), ident)
			if err != nil {
				failErr(c, err)
				return
			}
			f.NodeUUID = n.UUID
		}
	}
	if a := c.Query("address"); a != "" {
		if f.Address = store.NormalizeMAC(a); f.Address == "" {
			fail(c, http.StatusBadRequest, fmt.Sprintf("Expected a MAC address but received %s.", a))
			return
		}
	}
	ports, err := s.c.Store().ListPorts(c.Request.Context(), f)
	if err != nil {
		failErr(c, err)
		return
	}
	out := make([]any, 0, len(ports))
	for _, p := range ports {
		out = append(out, portDoc(c, p, detail))
	}
	c.JSON(http.StatusOK, gin.H{"ports": out})
}

func (s *Server) getPort(c *gin.Context) {
	p, err := s.c.Store().GetPort(c.Request.Context(), c.Param("uuid"))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			fail(c, http.StatusNotFound, fmt.Sprintf("Port %s could not be found.", c.Param("uuid")))
			return
		}
		failErr(c, err)
		return
	}
	c.JSON(http.StatusOK, portDoc(c, p, true))
}

func (s *Server) deletePort(c *gin.Context) {
	if err := s.c.Store().DeletePort(c.Request.Context(), c.Param("uuid")); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			fail(c, http.StatusNotFound, fmt.Sprintf("Port %s could not be found.", c.Param("uuid")))
			return
		}
		failErr(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
