package api

import (
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
