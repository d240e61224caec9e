package benchkit

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// A Contender is one side of a comparison: the raw client, eventkit,
// Watermill. Compare runs every contender once per round, one at a time.
type Contender struct {
	Name string
	// Prepare, when set, brings the contender to its starting state before
	// each of its runs (fill a table, create a fresh stream), untimed and
	// outside the CPU window.
	Prepare func(ctx context.Context) error
	// Run does the measured work. It calls clock.Start when the measured
	// window begins (before creating its consumer, say) and clock.Stop
	// when the last event is settled; the CPU is sampled at both. Without
	// them the window is the whole Run call. It returns the events it
	// handled and, where latency matters, one latency per event (or per
	// batch).
	Run func(ctx context.Context, clock *Clock) (events int, lat []time.Duration, err error)
	// Cleanup, when set, runs after each run, untimed.
	Cleanup func(ctx context.Context) error
}

// Clock marks the measured window of one run: its wall time and the CPU
// time of the client process and of the metered servers. Start and Stop
// may be called from any goroutine; only the first call of each counts.
type Clock struct {
	meter      *Meter
	mu         sync.Mutex
	start, end time.Time
	c0, c1     CPUSample
	profile    string   // Options.ProfileDir's file for this run, or ""
	prof       *os.File // open while the window profiles
}

// Start opens the window (the first call only).
func (c *Clock) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.start.IsZero() {
		c.startProfile()
		c.c0 = c.meter.Sample()
		c.start = time.Now()
	}
}

// Stop closes the window (the first call only; Start is implied).
func (c *Clock) Stop() {
	c.Start()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.end.IsZero() {
		c.end = time.Now()
		c.c1 = c.meter.Sample()
		c.stopProfile()
	}
}

// startProfile starts the CPU profile of the window, if one is asked for
// and none runs already (go test -cpuprofile): it is best effort, a
// profile that cannot start leaves the measurement as it is.
func (c *Clock) startProfile() {
	if c.profile == "" {
		return
	}
	f, err := os.Create(c.profile)
	if err != nil {
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		_ = os.Remove(c.profile)
		return
	}
	c.prof = f
}

func (c *Clock) stopProfile() {
	if c.prof != nil {
		pprof.StopCPUProfile()
		_ = c.prof.Close()
		c.prof = nil
	}
}

// Sample is the measurement of one contender in one round.
type Sample struct {
	Contender string
	Round     int
	Events    int
	Duration  time.Duration
	P50, P99  time.Duration
	CPU       CPUUsed
}

// Rate is events/s.
func (s Sample) Rate() float64 {
	if s.Duration <= 0 {
		return 0
	}
	return float64(s.Events) / s.Duration.Seconds()
}

// ClientPerEvent is the client process's CPU µs per event.
func (s Sample) ClientPerEvent() float64 { return perEvent(s.CPU.Client, s.Events) }

// ServerPerEvent is the metered servers' CPU µs per event (0 when none).
func (s Sample) ServerPerEvent() float64 { return perEvent(s.CPU.Server, s.Events) }

func perEvent(d time.Duration, n int) float64 {
	if n <= 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}

// Options configure Compare.
type Options struct {
	// Rounds is how many times every contender runs (default 5). Round r
	// runs the contenders in order when r is even and in reverse when odd
	// (A B, B A, A B, ...): they alternate, never run at once, and none
	// is always first or always right after the same one.
	Rounds int
	// Meter samples the CPU; nil meters only this process.
	Meter *Meter
	// Out gets one line per contender per round as it ends, then the
	// summary; nil prints nothing.
	Out io.Writer
	// ProfileDir, if set, gets a CPU profile of every run's measured
	// window (the whole process, only while the clock runs), named
	// <contender>-<round>.prof; `go tool pprof DIR/eventkit-*.prof`
	// merges a contender's rounds.
	ProfileDir string
}

// Summary is a contender's medians over the rounds, and its ratios to the
// baseline (the first contender): the median of the per-round ratios, so
// that a slow round slows both sides of its ratio.
type Summary struct {
	Contender                     string
	Rate, ClientUS, ServerUS      float64
	P50, P99                      time.Duration
	RateRatio, ClientRatio, Ratio float64 // Ratio: total CPU per event vs the baseline's
	HasServer                     bool
}

// Report is the outcome of Compare.
type Report struct {
	Samples []Sample
	Summary []Summary
	Servers string // the metered servers' names
}

// Compare runs the contenders for opt.Rounds rounds, one at a time and
// alternated, and summarises them against contenders[0], the baseline. It
// returns what was measured so far with the first error.
func Compare(ctx context.Context, opt Options, contenders ...Contender) (Report, error) {
	if opt.Rounds <= 0 {
		opt.Rounds = 5
	}
	if opt.Meter == nil {
		opt.Meter = &Meter{}
	}
	rep := Report{Servers: opt.Meter.ServerNames()}
	if opt.Out != nil {
		srv := rep.Servers
		if srv == "" {
			srv = "none local"
		}
		fmt.Fprintf(opt.Out, "%d rounds, contenders alternated; CPU µs/event: client = this process (getrusage), server = %s (/proc)\n", opt.Rounds, srv)
	}
	for r := range opt.Rounds {
		for _, i := range order(len(contenders), r) {
			s, err := runOnce(ctx, opt, contenders[i], r)
			if err != nil {
				rep.Summary = summarise(contenders, rep.Samples)
				return rep, fmt.Errorf("%s, round %d: %w", contenders[i].Name, r+1, err)
			}
			rep.Samples = append(rep.Samples, s)
			if opt.Out != nil {
				fmt.Fprintln(opt.Out, s.line())
			}
		}
	}
	rep.Summary = summarise(contenders, rep.Samples)
	if opt.Out != nil {
		rep.WriteSummary(opt.Out)
	}
	return rep, nil
}

// order is the contenders' order in round r: forwards on even rounds,
// backwards on odd ones.
func order(n, r int) []int {
	o := make([]int, n)
	for i := range o {
		o[i] = i
		if r%2 == 1 {
			o[i] = n - 1 - i
		}
	}
	return o
}

func runOnce(ctx context.Context, opt Options, c Contender, round int) (Sample, error) {
	s := Sample{Contender: c.Name, Round: round + 1}
	if c.Prepare != nil {
		if err := c.Prepare(ctx); err != nil {
			return s, fmt.Errorf("prepare: %w", err)
		}
	}
	clock := &Clock{meter: opt.Meter}
	if opt.ProfileDir != "" {
		clock.profile = filepath.Join(opt.ProfileDir, fmt.Sprintf("%s-%d.prof", strings.Join(strings.Fields(c.Name), "-"), round+1))
	}
	n, lat, err := c.Run(ctx, clock)
	clock.Stop()
	if c.Cleanup != nil {
		if cerr := c.Cleanup(ctx); cerr != nil && err == nil {
			err = fmt.Errorf("cleanup: %w", cerr)
		}
	}
	if err != nil {
		return s, err
	}
	s.Events, s.Duration = n, clock.end.Sub(clock.start)
	s.CPU = clock.c1.Since(clock.c0)
	s.P50, s.P99 = percentiles(lat)
	return s, nil
}

func percentiles(lat []time.Duration) (p50, p99 time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	l := slices.Clone(lat)
	slices.Sort(l)
	return l[len(l)/2], l[min(len(l)-1, len(l)*99/100)]
}

func (s Sample) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "round %d  %-28s %8d events %7.2fs %10.0f ev/s", s.Round, s.Contender, s.Events, s.Duration.Seconds(), s.Rate())
	if s.P99 > 0 {
		fmt.Fprintf(&b, "  p50 %s p99 %s", ms(s.P50), ms(s.P99))
	}
	fmt.Fprintf(&b, "  client %.1f µs/ev", s.ClientPerEvent())
	if s.CPU.HasServer {
		fmt.Fprintf(&b, "  server %.1f µs/ev", s.ServerPerEvent())
	}
	return b.String()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	x = slices.Clone(x)
	slices.Sort(x)
	if len(x)%2 == 1 {
		return x[len(x)/2]
	}
	return (x[len(x)/2-1] + x[len(x)/2]) / 2
}

func medianDur(x []time.Duration) time.Duration {
	f := make([]float64, len(x))
	for i, d := range x {
		f[i] = float64(d)
	}
	return time.Duration(median(f))
}

func summarise(contenders []Contender, samples []Sample) []Summary {
	if len(contenders) == 0 {
		return nil
	}
	base := map[int]Sample{}
	for _, s := range samples {
		if s.Contender == contenders[0].Name {
			base[s.Round] = s
		}
	}
	var out []Summary
	for _, c := range contenders {
		var rate, cl, sv, rr, cr, tr []float64
		var p50, p99 []time.Duration
		sum := Summary{Contender: c.Name}
		for _, s := range samples {
			if s.Contender != c.Name {
				continue
			}
			rate = append(rate, s.Rate())
			cl = append(cl, s.ClientPerEvent())
			sv = append(sv, s.ServerPerEvent())
			p50, p99 = append(p50, s.P50), append(p99, s.P99)
			sum.HasServer = sum.HasServer || s.CPU.HasServer
			if b, ok := base[s.Round]; ok && b.Rate() > 0 && b.ClientPerEvent() > 0 {
				rr = append(rr, s.Rate()/b.Rate())
				cr = append(cr, s.ClientPerEvent()/b.ClientPerEvent())
				tr = append(tr, (s.ClientPerEvent()+s.ServerPerEvent())/(b.ClientPerEvent()+b.ServerPerEvent()))
			}
		}
		if len(rate) == 0 {
			continue
		}
		sum.Rate, sum.ClientUS, sum.ServerUS = median(rate), median(cl), median(sv)
		sum.P50, sum.P99 = medianDur(p50), medianDur(p99)
		sum.RateRatio, sum.ClientRatio, sum.Ratio = median(rr), median(cr), median(tr)
		out = append(out, sum)
	}
	return out
}

// WriteSummary prints the summary table: medians over the rounds and the
// ratios to the baseline (the first contender).
func (r Report) WriteSummary(w io.Writer) {
	if len(r.Summary) == 0 {
		return
	}
	fmt.Fprintf(w, "summary (medians over rounds; ratios are the median of per-round ratios to %s)\n", r.Summary[0].Contender)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "contender\tev/s\tx baseline\tp50\tp99\tclient µs/ev\tx baseline\tserver µs/ev\tCPU/ev x baseline\t")
	for _, s := range r.Summary {
		p50, p99, srv := "-", "-", "-"
		if s.P99 > 0 {
			p50, p99 = ms(s.P50), ms(s.P99)
		}
		if s.HasServer {
			srv = fmt.Sprintf("%.1f", s.ServerUS)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%s\t%s\t%.1f\t%.2f\t%s\t%.2f\t\n", s.Contender, s.Rate, s.RateRatio, p50, p99, s.ClientUS, s.ClientRatio, srv, s.Ratio)
	}
	_ = tw.Flush()
}

// Of returns the summary of the contender named name.
func (r Report) Of(name string) (Summary, bool) {
	for _, s := range r.Summary {
		if s.Contender == name {
			return s, true
		}
	}
	return Summary{}, false
}

// PairRatio is the median over the rounds of a's per-round ratio to b (the
// two contenders of one round): events/s and total CPU (client + servers)
// per event. ok is false when no round ran both.
func (r Report) PairRatio(a, b string) (rate, cpu float64, ok bool) {
	bs := map[int]Sample{}
	for _, s := range r.Samples {
		if s.Contender == b {
			bs[s.Round] = s
		}
	}
	var rr, cr []float64
	for _, s := range r.Samples {
		o, found := bs[s.Round]
		if s.Contender != a || !found || o.Rate() <= 0 {
			continue
		}
		rr = append(rr, s.Rate()/o.Rate())
		if t := o.ClientPerEvent() + o.ServerPerEvent(); t > 0 {
			cr = append(cr, (s.ClientPerEvent()+s.ServerPerEvent())/t)
		}
	}
	return median(rr), median(cr), len(rr) > 0
}

// ServerPerEventOf is the median over contender's rounds of server i's CPU
// µs per event (i indexes Meter.Servers).
func (r Report) ServerPerEventOf(contender string, i int) float64 {
	var x []float64
	for _, s := range r.Samples {
		if s.Contender == contender && i < len(s.CPU.PerServer) {
			x = append(x, perEvent(s.CPU.PerServer[i], s.Events))
		}
	}
	return median(x)
}
