package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/exp/trace"
)

func TestAccount(t *testing.T) {
	t.Parallel()
	// Waiting from 0, runnable at 10 µs, running at 15, in a system call
	// at 30, running at 35, waiting at 40, runnable at 100, running at 130.
	ts := []transition{
		{0, trace.GoWaiting},
		{10_000, trace.GoRunnable},
		{15_000, trace.GoRunning},
		{30_000, trace.GoSyscall},
		{35_000, trace.GoRunning},
		{40_000, trace.GoWaiting},
		{100_000, trace.GoRunnable},
		{130_000, trace.GoRunning},
	}
	for _, tc := range []struct {
		name     string
		from, to trace.Time
		want     spent
	}{
		{"across all", 5_000, 140_000, spent{running: 15 + 5 + 10, syscall: 5, runnable: 5 + 30, waiting: 5 + 60}},
		{"inside one state", 50_000, 60_000, spent{waiting: 10}},
		{"from a change", 10_000, 20_000, spent{runnable: 5, running: 5}},
		{"to a change", 20_000, 40_000, spent{running: 15, syscall: 5}},
		{"after the last change", 150_000, 160_000, spent{running: 10}},
		{"from the first change", 0, 5_000, spent{waiting: 5}},
	} {
		got, ok := account(ts, tc.from, tc.to)
		if !ok || got != tc.want {
			t.Errorf("%s: account(%d, %d) = %+v, %v; want %+v, true", tc.name, tc.from, tc.to, got, ok, tc.want)
		}
	}
	if got, ok := account(ts[1:], 5_000, 8_000); ok {
		t.Errorf("before the goroutine's first change: %+v, true; want false", got)
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	trips := []roundTrip{
		{start: 10, written: 14, end: 30, pinger: 1},
		{start: 40, written: 44, end: 60, pinger: 1}, // its echo came before its Write returned
		{start: 70, written: 74, end: 90, pinger: 1}, // no echo logged in time
		{start: 100, written: 104, end: 120, pinger: 1},
	}
	echoes := []echo{{5, 8}, {20, 9}, {42, 9}, {95, 9}, {110, 9}}
	want := []roundTrip{
		{start: 10, written: 14, got: 20, end: 30, pinger: 1, echoer: 9},
		{start: 40, written: 44, got: 42, end: 60, pinger: 1, echoer: 9},
		{start: 100, written: 104, got: 110, end: 120, pinger: 1, echoer: 9},
	}
	if diff := cmp.Diff(want, match(trips, echoes), cmp.AllowUnexported(roundTrip{})); diff != "" {
		t.Errorf("match (-want +got):\n%s", diff)
	}
}

func TestMainPinger(t *testing.T) {
	t.Parallel()
	// A warm-up round trip on goroutine 3, then the run on goroutine 7.
	trips := []roundTrip{{start: 1, pinger: 3}, {start: 2, pinger: 7}, {start: 3, pinger: 7}}
	got := mainPinger(trips)
	if len(got) != 2 || got[0].start != 2 || got[1].start != 3 {
		t.Errorf("mainPinger kept %+v, want the two of goroutine 7", got)
	}
}
