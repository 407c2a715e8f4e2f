package main

import (
	"testing"

	"golang.org/x/exp/trace"
)

func TestAccount(t *testing.T) {
	t.Parallel()
	// Waiting from 0, runnable at 10 µs, running at 15, waiting at 40,
	// runnable at 100, running at 130.
	ts := []transition{
		{0, trace.GoWaiting},
		{10_000, trace.GoRunnable},
		{15_000, trace.GoRunning},
		{40_000, trace.GoWaiting},
		{100_000, trace.GoRunnable},
		{130_000, trace.GoRunning},
	}
	for _, tc := range []struct {
		name     string
		from, to trace.Time
		want     spent
	}{
		{"whole", 5_000, 140_000, spent{running: 25 + 10, runnable: 5 + 30, waiting: 5 + 60}},
		{"inside one state", 50_000, 60_000, spent{waiting: 10}},
		{"from a change", 10_000, 20_000, spent{runnable: 5, running: 5}},
		{"to a change", 20_000, 40_000, spent{running: 20}},
		{"after the last change", 150_000, 160_000, spent{running: 10}},
		{"before the first change", 0, 5_000, spent{waiting: 5}},
	} {
		if got := account(ts, tc.from, tc.to); got != tc.want {
			t.Errorf("%s: account(%d, %d) = %+v, want %+v", tc.name, tc.from, tc.to, got, tc.want)
		}
	}
	if got := account(ts[1:], 5_000, 8_000); got != (spent{}) {
		t.Errorf("before anything is known: %+v, want nothing", got)
	}
}
