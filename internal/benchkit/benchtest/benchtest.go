// Package benchtest runs a benchkit comparison as a Go benchmark: the
// bench/* modules' shared harness.
//
// A benchmark built on it ignores b.N. The first call of every -count
// (b.N == 1) runs the comparison, a fixed number of events per contender
// and run, for a number of alternated rounds, prints one line per
// contender per round and a summary, and reports the medians as metrics;
// the calls with a larger b.N that the testing package makes afterwards
// report the same figures again without running anything. So
// `-benchtime 1x` is the natural flag, and any other is harmless.
//
// EVENTKIT_BENCH_EVENTS overrides the event count, EVENTKIT_BENCH_ROUNDS
// the rounds (default 5); -short runs 1/20 of the events for 2 rounds, to
// check that a benchmark works (its figures then mean little: start-up is
// no longer small beside the run). EVENTKIT_BENCH_ONLY (a comma-separated
// list of contender names) runs only those, the first one kept being the
// baseline; EVENTKIT_BENCH_PROFILE=DIR writes a CPU profile of every
// run's measured window to DIR (see benchkit.Options.ProfileDir).
package benchtest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit/internal/benchkit"
)

// Events returns the number of events per contender and run: full, or
// EVENTKIT_BENCH_EVENTS, or full/20 under -short.
func Events(full int) int {
	if n, err := strconv.Atoi(os.Getenv("EVENTKIT_BENCH_EVENTS")); err == nil && n > 0 {
		return n
	}
	if testing.Short() {
		return max(full/20, 100)
	}
	return full
}

// Rounds returns the rounds to run: EVENTKIT_BENCH_ROUNDS, or 2 under
// -short, or 5.
func Rounds() int {
	if n, err := strconv.Atoi(os.Getenv("EVENTKIT_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	if testing.Short() {
		return 2
	}
	return 5
}

var (
	mu   sync.Mutex
	last = map[string]benchkit.Report{}
)

// Compare runs the comparison on b's first call of each -count, printing
// to stdout, and reports every contender's median events/s, client and
// server CPU µs per event and its ratios to the baseline (the first
// contender) as metrics. meter may be nil (this process only).
func Compare(b *testing.B, meter *benchkit.Meter, contenders ...benchkit.Contender) benchkit.Report {
	b.Helper()
	b.StopTimer()
	mu.Lock()
	rep, ok := last[b.Name()]
	mu.Unlock()
	if b.N == 1 || !ok {
		var err error
		opt := benchkit.Options{Rounds: Rounds(), Meter: meter, Out: os.Stdout, ProfileDir: os.Getenv("EVENTKIT_BENCH_PROFILE")}
		if opt.ProfileDir != "" {
			if err := os.MkdirAll(opt.ProfileDir, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		rep, err = benchkit.Compare(context.Background(), opt, Only(contenders...)...)
		if err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		last[b.Name()] = rep
		mu.Unlock()
	}
	for i, s := range rep.Summary {
		n := unit(s.Contender)
		b.ReportMetric(s.Rate, n+"-ev/s")
		b.ReportMetric(s.ClientUS, n+"-client-µs/ev")
		if s.HasServer {
			b.ReportMetric(s.ServerUS, n+"-server-µs/ev")
		}
		if i > 0 {
			base := unit(rep.Summary[0].Contender)
			b.ReportMetric(s.RateRatio, n+"/"+base)
			b.ReportMetric(s.Ratio, n+"/"+base+"-cpu/ev")
		}
	}
	return rep
}

// Only keeps the contenders named in EVENTKIT_BENCH_ONLY (a comma-separated
// list; all when it is unset), in their order: the first one kept is the
// baseline.
func Only(cs ...benchkit.Contender) []benchkit.Contender {
	list := os.Getenv("EVENTKIT_BENCH_ONLY")
	if list == "" {
		return cs
	}
	keep := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		keep[strings.TrimSpace(n)] = true
	}
	var out []benchkit.Contender
	for _, c := range cs {
		if keep[c.Name] {
			out = append(out, c)
		}
	}
	return out
}

// unit makes a contender name a metric unit (no white space).
func unit(s string) string {
	return strings.Join(strings.Fields(s), "-")
}

// Batches runs call for [i, end) over n events in steps of batch, inside
// clock's window, and returns n and each call's latency: the body of a
// publish contender.
func Batches(clock *benchkit.Clock, n, batch int, call func(i, end int) error) (int, []time.Duration, error) {
	lat := make([]time.Duration, 0, n/batch+1)
	clock.Start()
	for i := 0; i < n; i += batch {
		t0 := time.Now()
		if err := call(i, min(i+batch, n)); err != nil {
			return 0, nil, err
		}
		lat = append(lat, time.Since(t0))
	}
	clock.Stop()
	return n, lat, nil
}

// PostgresDurability prints the PostgreSQL server's commit durability
// settings (synchronous_commit, fsync) before a comparison: they bound
// every per-transaction figure (a server run with them off, as
// scripts/pgtemp.sh starts one, commits without waiting for the disk; a
// default server waits at each commit), so a reader needs them to compare
// a run with another. show reads one setting (SHOW name).
func PostgresDurability(show func(name string) (string, error)) {
	var parts []string
	for _, name := range []string{"synchronous_commit", "fsync"} {
		v, err := show(name)
		if err != nil {
			v = "?"
		}
		parts = append(parts, name+"="+v)
	}
	fmt.Printf("postgres: %s\n", strings.Join(parts, " "))
}
