package scenarios

import (
	"context"
	"errors"
	"time"
)

// errTimedOut is what poll returns when its timeout passes first.
var errTimedOut = errors.New("timed out")

// poll is the runner's one wait loop: it calls done at once and then every
// interval (counted from the end of the previous call, so a slow API is not
// hammered) until done says true (nil), the timeout passes (errTimedOut,
// after one last call) or ctx ends (ctx.Err()). A timeout of 0 waits for
// ctx alone. A call that takes long stretches the pause after it to
// pollCostFactor times its own time (at most maxPollPause): a wait on
// 10,000 nodes reads them all each time, ~70 ms of runner and driver CPU
// under load, and at a fixed 200 ms its polls were ~40 of the bench's CPU
// seconds, taken from the nodes it waits for.
func poll(ctx context.Context, interval, timeout time.Duration, done func(ctx context.Context) bool) error {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	next := time.NewTimer(interval)
	defer next.Stop()
	for {
		began := time.Now()
		if done(ctx) {
			return nil
		}
		next.Reset(PollPause(interval, time.Since(began)))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-expired:
			if done(ctx) {
				return nil
			}
			return errTimedOut
		case <-next.C:
		}
	}
}

// pollCostFactor and maxPollPause bound how much of the machine a poll
// takes: at most about 1/(1+pollCostFactor) of the wall clock. At 10,000
// nodes a poll reads every node (tens of ms of both processes' CPU); at 9
// the polls of a wait took a tenth of a CPU-bound deploy's machine, at 19
// a twentieth, for at most maxPollPause later news that a wait is over.
const (
	pollCostFactor = 19
	maxPollPause   = 2 * time.Second
)

// PollPause is the pause after a poll that took took: interval, or
// pollCostFactor times took when that is longer (at most maxPollPause, and
// never less than interval). The bench's own waits pause by it too.
func PollPause(interval, took time.Duration) time.Duration {
	return max(interval, min(pollCostFactor*took, maxPollPause))
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
