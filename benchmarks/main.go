// Command benchmarks compares tcpchan with raw TCP and other Go stream
// multiplexers (hashicorp/yamux, xtaci/smux, libp2p/go-yamux) on the same
// workloads, in one process, alternating implementations within each
// round. Progress goes to stderr, a markdown table of medians to stdout.
//
//	cd benchmarks && go run . [-quick] [-rounds N] [-only bulk1,pingpong] [-impl tcp,tcpchan]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

type key struct{ workload, impl string }

type outcome struct {
	vals map[string]float64
	err  error
}

func main() {
	rounds := flag.Int("rounds", 3, "rounds; each round runs every workload once per implementation")
	quick := flag.Bool("quick", false, "small sizes (whole run well under a minute)")
	only := flag.String("only", "", "comma-separated workload names to run (default all)")
	impl := flag.String("impl", "", "comma-separated implementation names to run (default all; tcp is always kept as the baseline)")
	list := flag.Bool("list", false, "list workloads and implementations, then exit")
	flag.Parse()

	if *list {
		for _, w := range workloads {
			fmt.Printf("%-20s %s\n", w.name, w.desc)
		}
		fmt.Println()
		for _, m := range muxes {
			fmt.Println(m.Name())
		}
		return
	}

	p := fullParams()
	if *quick {
		p = quickParams()
	}

	ws := selectWorkloads(*only)
	ms := selectMuxes(*impl)
	if len(ws) == 0 || len(ms) == 0 {
		logf("nothing to run (see -list)")
		os.Exit(2)
	}

	results := map[key][]outcome{}
	begin := time.Now()
	for r := 0; r < *rounds; r++ {
		for _, w := range ws {
			for k := range ms {
				m := ms[(k+r)%len(ms)] // rotate the order each round
				t0 := time.Now()
				o := measure(w, m, &p)
				el := time.Since(t0).Round(time.Millisecond)
				results[key{w.name, m.Name()}] = append(results[key{w.name, m.Name()}], o)
				if o.err != nil {
					logf("[%d/%d] %-20s %-16s %6v ERROR: %v", r+1, *rounds, w.name, m.Name(), el, o.err)
				} else {
					logf("[%d/%d] %-20s %-16s %6v %s", r+1, *rounds, w.name, m.Name(), el, fmtVals(w, o.vals))
				}
			}
		}
	}
	time.Sleep(100 * time.Millisecond)
	logf("done in %v (goroutines left: %d)", time.Since(begin).Round(time.Second), runtime.NumGoroutine())
	printTable(ws, ms, results, *rounds, *quick, &p)
}

func selectWorkloads(only string) []workload {
	if only == "" {
		return workloads
	}
	want := map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		want[strings.TrimSpace(s)] = true
	}
	var out []workload
	for _, w := range workloads {
		if want[w.name] {
			out = append(out, w)
			delete(want, w.name)
		}
	}
	for s := range want {
		logf("unknown workload %q", s)
	}
	return out
}

func selectMuxes(impl string) []Mux {
	if impl == "" {
		return muxes
	}
	var out []Mux
	for _, m := range muxes {
		if m.Name() == "tcp" {
			out = append(out, m)
			continue
		}
		for _, s := range strings.Split(impl, ",") {
			if s = strings.TrimSpace(s); s != "" && strings.Contains(m.Name(), s) {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

func measure(w workload, m Mux, p *params) outcome {
	runtime.GC()
	linkCfg := &p.link
	if !w.link {
		linkCfg = nil
	}
	e, err := newEnv(m, linkCfg)
	if err != nil {
		e.Close()
		return outcome{err: fmt.Errorf("setup: %w", err)}
	}
	done := make(chan outcome, 1)
	go func() {
		v, err := w.run(e, p)
		done <- outcome{v, err}
	}()
	var o outcome
	select {
	case o = <-done:
	case <-time.After(p.timeout):
		o = outcome{err: fmt.Errorf("timed out after %v", p.timeout)}
		e.Close() // should unblock the workload
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			logf("warning: %s/%s still running after teardown", w.name, m.Name())
		}
	}
	if o.err == nil {
		o.err = e.firstErr()
	}
	e.Close()
	return o
}

func fmtVals(w workload, v map[string]float64) string {
	var parts []string
	for _, mt := range w.metrics {
		parts = append(parts, fmt.Sprintf("%s="+mt.format, mt.key, v[mt.key]))
	}
	if n, ok := v["streams"]; ok {
		parts = append(parts, fmt.Sprintf("streams=%.0f", n))
	}
	return strings.Join(parts, " ")
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func printTable(ws []workload, ms []Mux, res map[key][]outcome, rounds int, quick bool, p *params) {
	mode := "full"
	if quick {
		mode = "quick"
	}
	fmt.Printf("## tcpchan benchmarks (%s, %d rounds, %s, GOMAXPROCS=%d, %s/%s)\n\n",
		mode, rounds, runtime.Version(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("Medians over rounds; in parentheses the ratio to raw TCP (tcp = one TCP connection per stream). ")
	fmt.Printf("↑ higher is better, ↓ lower is better. longlink-* run through linksim: %v RTT, %.0f MB/s per direction.\n\n",
		p.link.RTT(), p.link.Rate/1e6)
	fmt.Printf("| workload | metric |")
	for _, m := range ms {
		fmt.Printf(" %s |", m.Name())
	}
	fmt.Printf("\n|---|---|")
	for range ms {
		fmt.Printf("---:|")
	}
	fmt.Println()
	var errs []string
	for _, w := range ws {
		for _, mt := range w.metrics {
			arrow := "↓"
			if mt.higher {
				arrow = "↑"
			}
			fmt.Printf("| %s | %s %s |", w.name, mt.key, arrow)
			base, haveBase := 0.0, false
			for _, m := range ms {
				cell := "error"
				var vals []float64
				for _, o := range res[key{w.name, m.Name()}] {
					if o.err == nil {
						vals = append(vals, o.vals[mt.key])
					}
				}
				if len(vals) > 0 {
					v := median(vals)
					cell = fmt.Sprintf(mt.format, v)
					if m.Name() == "tcp" {
						base, haveBase = v, true
					} else if haveBase && base != 0 {
						cell += fmt.Sprintf(" (%.2fx)", v/base)
					}
					if len(vals) < len(res[key{w.name, m.Name()}]) {
						cell += fmt.Sprintf(" [%d/%d ok]", len(vals), len(res[key{w.name, m.Name()}]))
					}
				}
				fmt.Printf(" %s |", cell)
			}
			fmt.Println()
		}
		for _, m := range ms {
			for _, o := range res[key{w.name, m.Name()}] {
				if o.err != nil {
					errs = append(errs, fmt.Sprintf("- %s / %s: %v", w.name, m.Name(), o.err))
				}
			}
		}
	}
	for _, w := range ws {
		if w.name != "idle-mem" {
			continue
		}
		fmt.Printf("\nidle-mem streams per session:")
		for _, m := range ms {
			for _, o := range res[key{w.name, m.Name()}] {
				if o.err == nil {
					fmt.Printf(" %s=%.0f", m.Name(), o.vals["streams"])
					break
				}
			}
		}
		fmt.Println(" (tcp is capped by the open-file limit: two descriptors per connection).")
	}
	if len(errs) > 0 {
		fmt.Printf("\nErrors:\n%s\n", strings.Join(errs, "\n"))
	}
}
