package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ironlab/ironlab/fakeagent"
	"github.com/ironlab/ironlab/fakeagent/pxedeploy"
	"github.com/ironlab/ironlab/scenarios/ironic"
	"github.com/ironlab/ironlab/simulator/lab"
)

// `takeover_outcome: {state: active, disk_image: demo-os}`: the node
// reached state (and its disk holds the image, when disk_image is set),
// or it is in the failed state Ironic gives a node whose conductor died
// in the middle of a step toward it (active: deploy failed; available:
// clean failed; manageable: enroll) with last_error naming the takeover
// and a "conductor takeover" event in its history; or failed by the
// call-back timeout when the conductor that accepted its PXE ramdisk's
// call-back died before acting on it (lostCallback), or when the one that
// handed out its agent's token died before the answer got out
// (lostLookup). Which nodes a killed conductor was acting on is up to
// the race; that each ends one of these ways is not.
type expectTakeoverOutcome struct {
	State     string `yaml:"state" json:"state"`
	DiskImage string `yaml:"disk_image" json:"disk_image,omitempty"`
}

func init() {
	registerExpectation("takeover_outcome", func() expectation { return new(expectTakeoverOutcome) })
}

// lostCallback says why a node failed by its call-back timeout is not one
// whose conductor died with its call-back, or "" when it is. The built-in
// driver saves an accepted pass_deploy_info (its event) together with the
// move to deploying, so a conductor killed between its 202 and that save
// leaves no trace in the history; the ramdisk, which never calls again
// after a 202, printed pxedeploy.AcceptedLine on the console. One more
// accepted call-back there than the history holds, and a call-back
// timeout in the history, is Ironic's end for such a node. An agent node
// whose console says its token was handed out already is lostLookup's.
func (r *runner) lostCallback(ctx context.Context, n *lab.Node) string {
	evs, err := r.api.Events(ctx, r.ident(n))
	if err != nil {
		return "read the history: " + err.Error()
	}
	recorded, timedOut := 0, false
	for _, raw := range evs {
		var ev struct {
			Kind  string `json:"kind"`
			Event string `json:"event"`
		}
		if json.Unmarshal(raw, &ev) != nil {
			continue
		}
		switch {
		case ev.Event == "pass_deploy_info":
			recorded++
		case ev.Kind == "provision" && ev.Event == "callback timeout":
			timedOut = true
		}
	}
	if !timedOut {
		return "last_error names the call-back timeout, but the history has no \"callback timeout\" event"
	}
	log, err := n.Machine.ConsoleLog()
	if err != nil {
		return "read the console: " + err.Error()
	}
	if strings.Contains(log, fakeagent.MaskedTokenMarker) {
		return r.lostLookup(n)
	}
	if onConsole := strings.Count(log, pxedeploy.AcceptedMarker); onConsole <= recorded {
		return fmt.Sprintf("failed by the call-back timeout, but no call-back was left unanswered by a conductor's death: the ramdisk's console shows %d accepted, the history %d", onConsole, recorded)
	}
	return ""
}

// lostLookup says why an agent node failed by its call-back timeout, whose
// agent found its token handed out already (fakeagent.MaskedTokenLine on
// the console), is not one whose lookup answer a conductor fault lost, or
// "" when it is: the lab's front saw a lookup of the node that its
// conductor got and did not answer (killed, or hung past the agent's
// patience). That conductor had handed out the token; the agent's next
// lookup, through another, got "******", and the driver refused every
// heartbeat without a token until the call-back timeout, as Ironic does.
func (r *runner) lostLookup(n *lab.Node) string {
	const masked = "its agent's lookup found the agent token handed out already (the console says so)"
	if r.conds == nil {
		return masked + ", but the lab has no front whose conductor could have lost a lookup's answer"
	}
	if _, ok := r.conds.lostLookupOf(n.UUID, n.MACs); !ok {
		return masked + ", but no lookup of it was cut short by a conductor's death or pause"
	}
	return ""
}

// takeoverFailed is the state a takeover leaves a node in whose step
// toward the key could not resume (conductor.TakeOver).
var takeoverFailed = map[string]string{"active": "deploy failed", "available": "clean failed", "manageable": "enroll"}

func (e *expectTakeoverOutcome) validate(v *validator, p string, l *Lab) {
	if _, ok := takeoverFailed[e.State]; !ok {
		v.at(p+".state", "want active, available or manageable (a state a takeover can fail a node on the way to), got %q", e.State)
	}
	if e.DiskImage != "" && !hasImage(l, e.DiskImage) {
		v.at(p+".disk_image", "no image %q in lab.images", e.DiskImage)
	}
}

func (e *expectTakeoverOutcome) name() string {
	return fmt.Sprintf("%s, or %s by a takeover", e.State, takeoverFailed[e.State])
}

func (e *expectTakeoverOutcome) check(ctx context.Context, r *runner, n *lab.Node, an ironic.Node) string {
	switch an.ProvisionState {
	case e.State:
		if e.DiskImage != "" {
			return verifyDisk(n.DiskPath(), e.DiskImage)
		}
		return ""
	case takeoverFailed[e.State]:
		if strings.Contains(an.Error(), "Timeout reached while waiting for callback") {
			return r.lostCallback(ctx, n)
		}
		if !strings.Contains(an.Error(), "took the node over") {
			return fmt.Sprintf("%s, but last_error %q names no takeover", an.ProvisionState, an.Error())
		}
		if !r.hasEvent(ctx, n, "conductor takeover") {
			return fmt.Sprintf("%s by a takeover, but no \"conductor takeover\" event in the history", an.ProvisionState)
		}
		return ""
	}
	return fmt.Sprintf("state %q (last_error %q), want %s or %s by a takeover", an.ProvisionState, an.Error(), e.State, takeoverFailed[e.State])
}
