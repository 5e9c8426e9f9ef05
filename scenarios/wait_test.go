package scenarios

import (
	"context"
	"testing"
	"time"
)

func TestPollPauseGrowsWithTheCostOfAPoll(t *testing.T) {
	for _, tc := range []struct {
		interval, took, want time.Duration
	}{
		{200 * time.Millisecond, 0, 200 * time.Millisecond},
		{200 * time.Millisecond, 10 * time.Millisecond, 200 * time.Millisecond},
		{200 * time.Millisecond, 70 * time.Millisecond, 1330 * time.Millisecond},
		{200 * time.Millisecond, time.Second, maxPollPause},
		{5 * time.Second, time.Second, 5 * time.Second},
	} {
		if got := PollPause(tc.interval, tc.took); got != tc.want {
			t.Errorf("PollPause(%s, %s) = %s, want %s", tc.interval, tc.took, got, tc.want)
		}
	}
}

// A slow poll is followed by a longer pause: the second call starts at
// least pollCostFactor times the first one's time after it ended.
func TestPollPausesLongerAfterASlowCall(t *testing.T) {
	const slow = 30 * time.Millisecond
	var ended time.Time
	var gap time.Duration
	calls := 0
	err := poll(context.Background(), time.Millisecond, 10*time.Second, func(context.Context) bool {
		calls++
		if calls == 2 {
			gap = time.Since(ended)
			return true
		}
		time.Sleep(slow)
		ended = time.Now()
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	if gap < pollCostFactor*slow {
		t.Errorf("second poll %s after a %s poll ended, want at least %s", gap, slow, pollCostFactor*slow)
	}
}
