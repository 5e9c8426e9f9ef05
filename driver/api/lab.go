package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
)

// labProcess is the lab extension GET /v1/lab/process: the driver
// process's pid and CPU time (user + system), so that a scenario runner
// measures what the conductor spends over the API rather than by reading
// the process's /proc entry. Real Ironic has no such endpoint: the runner
// then measures nothing.
func (s *Server) labProcess(c *gin.Context) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fail(c, http.StatusInternalServerError, "read the driver process's CPU time: "+err.Error())
		return
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	c.JSON(http.StatusOK, gin.H{"pid": os.Getpid(), "cpu_seconds": cpu.Seconds()})
}

// Errors a Profiler returns for a piece it refuses.
var (
	// ErrProfileName: the name cannot name a file piece (400).
	ErrProfileName = errors.New("invalid CPU profile piece name")
	// ErrProfilePieceExists: a piece of that name was written before (409).
	ErrProfilePieceExists = errors.New("a CPU profile piece of that name was written already")
)

// A Profiler ends the CPU profile's current piece and begins one named
// name, returning the file it is written to.
type Profiler func(name string) (file string, err error)

// SetProfiler serves PUT /v1/lab/profile with p: a process started with a
// CPU profile (ironlab driver --cpuprofile) writes it in pieces, so that a
// bench profiles each phase on its own. Without one the endpoint answers
// 404.
func (s *Server) SetProfiler(p Profiler) { s.profiler = p }

// labProfile is the lab extension PUT /v1/lab/profile {"name": "deploy"}:
// the CPU profile's next piece. It answers {"file": path}.
func (s *Server) labProfile(c *gin.Context) {
	if s.profiler == nil {
		fail(c, http.StatusNotFound, "This driver writes no CPU profile (start it with --cpuprofile FILE).")
		return
	}
	var body struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(io.LimitReader(c.Request.Body, 4096)).Decode(&body); err != nil {
		fail(c, http.StatusBadRequest, "Invalid body: want {\"name\": \"<piece>\"}: "+err.Error())
		return
	}
	file, err := s.profiler(body.Name)
	switch {
	case errors.Is(err, ErrProfileName):
		fail(c, http.StatusBadRequest, err.Error())
		return
	case errors.Is(err, ErrProfilePieceExists):
		fail(c, http.StatusConflict, err.Error())
		return
	case err != nil:
		fail(c, http.StatusInternalServerError, err.Error())
		return
	}
	c.JSON(http.StatusOK, gin.H{"file": file})
}
