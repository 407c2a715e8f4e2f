package main

import "testing"

// TestIdleMemLeavesNothing: idle-mem, for every implementation, leaves no
// heap behind once it is done, so that no later reading counts its memory
// being freed. hashicorp/yamux held 2062 and 2078 KB for 1,000 streams
// (two runs), until its streams' 5-minute close timers fired, when each
// end closed its streams without waiting for the other's FIN (found by
// review helper 89).
func TestIdleMemLeavesNothing(t *testing.T) {
	p := quickParams()
	p.idleStreams = 1000
	var idle workload
	for _, w := range workloads {
		if w.name == "idle-mem" {
			idle = w
		}
	}
	for _, m := range muxes {
		h0 := settledHeap()
		if o := measure(idle, m, &p); o.err != nil {
			t.Fatalf("%s: %v", m.Name(), o.err)
		}
		if kept := int64(settledHeap()) - int64(h0); kept > 1<<20 {
			t.Errorf("%s: %d KB of heap kept after idle-mem with %d streams", m.Name(), kept>>10, p.idleStreams)
		}
	}
}
