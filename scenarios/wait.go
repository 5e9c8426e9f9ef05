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
// ctx alone.
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
		if done(ctx) {
			return nil
		}
		next.Reset(interval)
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
