package states

import (
	"errors"
	"testing"
)

// TestEveryTransition walks every (state, event) pair: the allowed ones must
// land where Ironic lands, everything else must be refused.
func TestEveryTransition(t *testing.T) {
	type edge struct {
		to   string
		user bool
	}
	want := map[string]map[string]edge{
		Enroll:         {EvManage: {Verifying, true}},
		Verifying:      {EvDone: {Manageable, false}, EvFail: {Enroll, false}},
		Manageable:     {EvProvide: {Cleaning, true}, EvClean: {Cleaning, true}},
		Available:      {EvManage: {Manageable, true}, EvDeploy: {Deploying, true}},
		Cleaning:       {EvWait: {CleanWait, false}, EvDone: {Available, false}, EvManage: {Manageable, false}, EvFail: {CleanFailed, false}},
		CleanWait:      {EvResume: {Cleaning, false}, EvFail: {CleanFailed, false}, EvAbort: {CleanFailed, true}},
		CleanFailed:    {EvManage: {Manageable, true}},
		Deploying:      {EvWait: {DeployWait, false}, EvDone: {Active, false}, EvFail: {DeployFailed, false}},
		DeployWait:     {EvResume: {Deploying, false}, EvFail: {DeployFailed, false}, EvAbort: {DeployFailed, true}, EvDeleted: {Deleting, true}},
		DeployFailed:   {EvRebuild: {Deploying, true}, EvDeploy: {Deploying, true}, EvDeleted: {Deleting, true}},
		Active:         {EvRebuild: {Deploying, true}, EvDeleted: {Deleting, true}, EvRescue: {Rescuing, true}},
		Deleting:       {EvClean: {Cleaning, false}, EvError: {Error, false}},
		Error:          {EvDeleted: {Deleting, true}, EvRebuild: {Deploying, true}},
		Rescuing:       {EvDone: {Rescue, false}, EvWait: {RescueWait, false}, EvFail: {RescueFailed, false}},
		RescueWait:     {EvResume: {Rescuing, false}, EvFail: {RescueFailed, false}, EvAbort: {RescueFailed, true}, EvDeleted: {Deleting, true}},
		Rescue:         {EvRescue: {Rescuing, true}, EvUnrescue: {Unrescuing, true}, EvDeleted: {Deleting, true}},
		RescueFailed:   {EvRescue: {Rescuing, true}, EvUnrescue: {Unrescuing, true}, EvDeleted: {Deleting, true}},
		Unrescuing:     {EvDone: {Active, false}, EvFail: {UnrescueFailed, false}},
		UnrescueFailed: {EvRescue: {Rescuing, true}, EvUnrescue: {Unrescuing, true}, EvDeleted: {Deleting, true}},
	}
	events := []string{EvManage, EvProvide, EvDeploy, EvDeleted, EvClean, EvAbort, EvRebuild, EvRescue, EvUnrescue,
		EvDone, EvWait, EvResume, EvFail, EvError}
	for _, from := range All() {
		for _, ev := range events {
			w, allowed := want[from][ev]
			t.Run(from+"/"+ev, func(t *testing.T) {
				got, err := Next(from, ev)
				if allowed {
					if err != nil || got != w.to {
						t.Fatalf("Next = %q, %v; want %q", got, err, w.to)
					}
				} else if !errors.Is(err, ErrInvalidTransition) {
					t.Fatalf("Next = %q, %v; want ErrInvalidTransition", got, err)
				}
				got, err = NextByUser(from, ev)
				if allowed && w.user {
					if err != nil || got != w.to {
						t.Fatalf("NextByUser = %q, %v; want %q", got, err, w.to)
					}
				} else if !errors.Is(err, ErrInvalidTransition) {
					t.Fatalf("NextByUser = %q, %v; want ErrInvalidTransition", got, err)
				}
			})
		}
	}
}

func TestMapVerb(t *testing.T) {
	tests := []struct {
		target, want string
		err          error
	}{
		{"active", EvDeploy, nil},
		{"deploy", EvDeploy, nil},
		{"deleted", EvDeleted, nil},
		{"undeploy", EvDeleted, nil},
		{"manage", EvManage, nil},
		{"provide", EvProvide, nil},
		{"clean", EvClean, nil},
		{"abort", EvAbort, nil},
		{"rebuild", EvRebuild, nil},
		{"rescue", EvRescue, nil},
		{"unrescue", EvUnrescue, nil},
		{"done", "", ErrUnknownVerb},
		{"wait", "", ErrUnknownVerb},
		{"inspect", "", ErrUnknownVerb},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			got, err := MapVerb(tc.target)
			if got != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("MapVerb(%q) = %q, %v; want %q, %v", tc.target, got, err, tc.want, tc.err)
			}
		})
	}
}
