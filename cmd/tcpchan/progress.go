package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// progress shows which run of the demo is under way. On a terminal it
// redraws one line ten times a second with the run's elapsed time and
// counter; elsewhere (a pipe, a log file) it prints a line per run.
type progress struct {
	w     io.Writer
	tty   bool
	total int

	mu    sync.Mutex
	n     int
	label string
	count *atomic.Int64
	unit  string
	start time.Time

	quit     chan struct{}
	done     chan struct{} // the redraw goroutine has exited
	stopOnce sync.Once
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, tty: isTerminal(w), quit: make(chan struct{}), done: make(chan struct{})}
	if p.tty {
		go p.loop()
	} else {
		close(p.done)
	}
	return p
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// next starts the display of the next run, whose progress counter is count
// (in unit; "bytes" is shown as MB).
func (p *progress) next(label string, count *atomic.Int64, unit string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	p.label, p.count, p.unit, p.start = label, count, unit, time.Now()
	if p.tty {
		p.drawLocked()
		return
	}
	fmt.Fprintf(p.w, "demo [%d/%d] %s\n", p.n, p.total, label)
}

func (p *progress) drawLocked() {
	var c string
	if p.unit == "bytes" {
		c = fmt.Sprintf("%.0f MB", float64(p.count.Load())/1e6)
	} else {
		c = fmt.Sprintf("%s %s", fmtInt(float64(p.count.Load())), p.unit)
	}
	fmt.Fprintf(p.w, "\r\x1b[Kdemo [%d/%d] %s  %.1fs  %s", p.n, p.total, p.label, time.Since(p.start).Seconds(), c)
}

func (p *progress) loop() {
	defer close(p.done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			fmt.Fprint(p.w, "\r\x1b[K")
			return
		case <-t.C:
			p.mu.Lock()
			if p.count != nil {
				p.drawLocked()
			}
			p.mu.Unlock()
		}
	}
}

// stop clears the line and waits for the redraw goroutine to exit. It may
// be called more than once.
func (p *progress) stop() {
	p.stopOnce.Do(func() { close(p.quit) })
	<-p.done
}
