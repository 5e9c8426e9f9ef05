// Package states is Ironic's provision state machine as data: the states, the
// events (API verbs and internal ones) and the table of allowed transitions.
package states

import (
	"errors"
	"fmt"
)

// Provision states, spelled as Ironic's API shows them.
const (
	Enroll       = "enroll"
	Verifying    = "verifying"
	Manageable   = "manageable"
	Available    = "available"
	Deploying    = "deploying"
	DeployWait   = "wait call-back"
	DeployFailed = "deploy failed"
	Active       = "active"
	Deleting     = "deleting"
	Cleaning     = "cleaning"
	CleanWait    = "clean wait"
	CleanFailed  = "clean failed"
	Error        = "error"

	// Rescue: the node boots a rescue ramdisk (the agent) in place of its
	// instance, whose disk stays as it is; unrescue boots the instance again.
	Rescuing       = "rescuing"
	RescueWait     = "rescue wait"
	Rescue         = "rescue"
	RescueFailed   = "rescue failed"
	Unrescuing     = "unrescuing"
	UnrescueFailed = "unrescue failed"
)

// All lists every state, stable first.
func All() []string { return append([]string(nil), all...) }

var all = []string{Enroll, Manageable, Available, Active, Rescue, Verifying, Deploying, DeployWait,
	DeployFailed, Deleting, Cleaning, CleanWait, CleanFailed, Error,
	Rescuing, RescueWait, RescueFailed, Unrescuing, UnrescueFailed}

// Events. The first group are verbs a user may send as "target" to
// PUT /v1/nodes/{id}/states/provision (after MapVerb); the rest are the
// conductor's own.
const (
	EvManage  = "manage"
	EvProvide = "provide"
	EvDeploy  = "deploy"
	EvDeleted = "deleted"
	EvClean   = "clean"
	EvAbort   = "abort"
	EvRebuild = "rebuild"
	// EvRescue and EvUnrescue need API 1.38.
	EvRescue   = "rescue"
	EvUnrescue = "unrescue"

	EvDone   = "done"   // an in-progress state finished
	EvWait   = "wait"   // waiting for the agent's call-back
	EvResume = "resume" // the call-back arrived; work again
	EvFail   = "fail"   // the in-progress state failed
	EvError  = "error"  // tear-down failed
)

// Transition is one edge of the machine. ByUser edges may be requested
// through the API; the others are taken by the conductor only.
type Transition struct {
	From, Event, To string
	ByUser          bool
}

// Table is every allowed transition (Ironic's ironic/common/states.py, the
// subset this lab implements).
func Table() []Transition { return append([]Transition(nil), table...) }

var table = []Transition{
	{Enroll, EvManage, Verifying, true},
	{Verifying, EvDone, Manageable, false},
	{Verifying, EvFail, Enroll, false},

	{Manageable, EvProvide, Cleaning, true},
	{Manageable, EvClean, Cleaning, true},
	{Available, EvManage, Manageable, true},

	{Cleaning, EvWait, CleanWait, false},
	{Cleaning, EvDone, Available, false},
	{Cleaning, EvManage, Manageable, false}, // end of a manual clean
	{Cleaning, EvFail, CleanFailed, false},
	{CleanWait, EvResume, Cleaning, false},
	{CleanWait, EvFail, CleanFailed, false},
	{CleanWait, EvAbort, CleanFailed, true},
	{CleanFailed, EvManage, Manageable, true},

	{Available, EvDeploy, Deploying, true},
	{Deploying, EvWait, DeployWait, false},
	{Deploying, EvDone, Active, false},
	{Deploying, EvFail, DeployFailed, false},
	{DeployWait, EvResume, Deploying, false},
	{DeployWait, EvFail, DeployFailed, false},
	{DeployWait, EvAbort, DeployFailed, true},
	{DeployWait, EvDeleted, Deleting, true},
	{DeployFailed, EvRebuild, Deploying, true},
	{DeployFailed, EvDeploy, Deploying, true},
	{DeployFailed, EvDeleted, Deleting, true},
	{Active, EvRebuild, Deploying, true},
	{Active, EvDeleted, Deleting, true},

	{Deleting, EvClean, Cleaning, false},
	{Deleting, EvError, Error, false},
	{Error, EvDeleted, Deleting, true},
	{Error, EvRebuild, Deploying, true},

	// Rescue, as ironic/common/states.py has it.
	{Active, EvRescue, Rescuing, true},
	{Rescuing, EvDone, Rescue, false},
	{Rescuing, EvWait, RescueWait, false},
	{Rescuing, EvFail, RescueFailed, false},
	{RescueWait, EvResume, Rescuing, false},
	{RescueWait, EvFail, RescueFailed, false},
	{RescueWait, EvAbort, RescueFailed, true},
	{RescueWait, EvDeleted, Deleting, true},
	{Rescue, EvRescue, Rescuing, true},
	{Rescue, EvUnrescue, Unrescuing, true},
	{Rescue, EvDeleted, Deleting, true},
	{RescueFailed, EvRescue, Rescuing, true},
	{RescueFailed, EvUnrescue, Unrescuing, true},
	{RescueFailed, EvDeleted, Deleting, true},
	{Unrescuing, EvDone, Active, false},
	{Unrescuing, EvFail, UnrescueFailed, false},
	{UnrescueFailed, EvRescue, Rescuing, true},
	{UnrescueFailed, EvUnrescue, Unrescuing, true},
	{UnrescueFailed, EvDeleted, Deleting, true},
}

// ErrInvalidTransition is wrapped when an event is not allowed in a state.
var ErrInvalidTransition = errors.New("invalid state transition")

// ErrUnknownVerb is wrapped when an API target is not a verb at all.
var ErrUnknownVerb = errors.New("unknown provision verb")

type key struct{ from, event string }

var index = func() map[key]Transition {
	m := make(map[key]Transition, len(table))
	for _, t := range table {
		m[key{t.From, t.Event}] = t
	}
	return m
}()

// Next returns the state event leads to from state, for any caller.
func Next(from, event string) (string, error) {
	t, ok := index[key{from, event}]
	if !ok {
		return "", fmt.Errorf("event %q in state %q: %w", event, from, ErrInvalidTransition)
	}
	return t.To, nil
}

// NextByUser is Next restricted to the transitions the API may request.
func NextByUser(from, event string) (string, error) {
	t, ok := index[key{from, event}]
	if !ok || !t.ByUser {
		return "", fmt.Errorf("event %q in state %q: %w", event, from, ErrInvalidTransition)
	}
	return t.To, nil
}

// MapVerb turns an API target into its event: "active" is "deploy" and
// "undeploy" is "deleted", as in Ironic.
func MapVerb(target string) (string, error) {
	switch target {
	case "active", EvDeploy:
		return EvDeploy, nil
	case "undeploy", EvDeleted:
		return EvDeleted, nil
	case EvManage, EvProvide, EvClean, EvAbort, EvRebuild, EvRescue, EvUnrescue:
		return target, nil
	}
	return "", fmt.Errorf("%q: %w", target, ErrUnknownVerb)
}

// Stable reports whether a state is one a node rests in (no work in progress).
func Stable(s string) bool {
	switch s {
	case Enroll, Manageable, Available, Active, DeployFailed, CleanFailed, Error,
		Rescue, RescueFailed, UnrescueFailed:
		return true
	}
	return false
}
