package benchkit

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit/internal/testenv"
)

// TestCompareAlternatesAndNeverOverlaps: every round runs each contender
// once, in order on even rounds and reversed on odd ones, and no two runs
// ever overlap.
func TestCompareAlternatesAndNeverOverlaps(t *testing.T) {
	var running atomic.Int32
	var seq []string
	mk := func(name string) Contender {
		return Contender{Name: name, Run: func(ctx context.Context, c *Clock) (int, []time.Duration, error) {
			if running.Add(1) != 1 {
				t.Errorf("%s ran while another contender was running", name)
			}
			defer running.Add(-1)
			seq = append(seq, name)
			c.Start()
			time.Sleep(2 * time.Millisecond)
			c.Stop()
			return 100, []time.Duration{time.Millisecond, 2 * time.Millisecond}, nil
		}}
	}
	var out strings.Builder
	rep, err := Compare(context.Background(), Options{Rounds: 4, Out: &out}, mk("A"), mk("B"), mk("C"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(seq, ""), "ABCCBAABCCBA"; got != want {
		t.Fatalf("order %s, want %s", got, want)
	}
	if len(rep.Samples) != 12 || len(rep.Summary) != 3 {
		t.Fatalf("%d samples, %d summaries", len(rep.Samples), len(rep.Summary))
	}
	if n := strings.Count(out.String(), "\nround "); n != 12 {
		t.Fatalf("%d round lines, want 12:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "summary") || !strings.Contains(out.String(), "client µs/ev") {
		t.Fatalf("no summary:\n%s", out.String())
	}
}

// TestSummaryRatiosAreMediansOfRoundRatios: a round where everything is
// slow (the machine busy) moves both sides of that round's ratio, so the
// ratio stays; the median ignores one odd round.
func TestSummaryRatiosAreMediansOfRoundRatios(t *testing.T) {
	var samples []Sample
	for r, slow := range []float64{1, 1, 10, 1, 1} {
		samples = append(samples,
			Sample{Contender: "raw", Round: r + 1, Events: 1000, Duration: time.Duration(slow * float64(time.Second)), CPU: CPUUsed{Client: 10 * time.Millisecond}},
			Sample{Contender: "ek", Round: r + 1, Events: 1000, Duration: time.Duration(slow * 1.25 * float64(time.Second)), CPU: CPUUsed{Client: 20 * time.Millisecond}})
	}
	s := summarise([]Contender{{Name: "raw"}, {Name: "ek"}}, samples)
	if len(s) != 2 {
		t.Fatal(s)
	}
	if s[1].RateRatio != 0.8 || s[1].ClientRatio != 2 || s[1].ClientUS != 20 || s[0].Rate != 1000 {
		t.Fatalf("%+v", s[1])
	}
}

func TestCompareStopsAtTheFirstError(t *testing.T) {
	boom := errors.New("boom")
	n := 0
	_, err := Compare(context.Background(), Options{Rounds: 3},
		Contender{Name: "A", Run: func(context.Context, *Clock) (int, []time.Duration, error) { n++; return 1, nil, nil }},
		Contender{Name: "B", Run: func(context.Context, *Clock) (int, []time.Duration, error) { return 0, nil, boom }})
	if !errors.Is(err, boom) || n != 1 {
		t.Fatalf("err %v after %d runs of A", err, n)
	}
}

func TestParseStat(t *testing.T) {
	p, ok := parseStat([]byte("4242 (postgres: a (b)) S 17 4242 4242 0 -1 4194560 1 0 0 0 30 12 5 3 20 0 1 0 100 0 0"))
	if !ok || p.pid != 4242 || p.ppid != 17 || p.comm != "postgres: a (b)" || p.ticks != 50 {
		t.Fatalf("%+v %v", p, ok)
	}
	if _, ok := parseStat([]byte("garbage")); ok {
		t.Fatal("parsed garbage")
	}
}

func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                         "127.0.0.1:4222",
		"postgres://u:p@localhost/test?sslmode=disable": "localhost:5432",
		"redis://[::1]:6380/0":                          "::1:6380",
		"127.0.0.1:5672":                                "127.0.0.1:5672",
		"kafka://a:1,b:2":                               "a:1",
	} {
		h, p, ok := hostPort(in)
		if got := h + ":" + strconv.Itoa(p); !ok || got != want {
			t.Errorf("%s: %s %v, want %s", in, got, ok, want)
		}
	}
	if _, _, ok := hostPort("file:///x"); ok {
		t.Error("a file URL has a port")
	}
}

// TestServerAtFindsTheListener finds the process listening on a port (this
// one) and meters its CPU; a remote address finds nothing.
func TestServerAtFindsTheListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, ok := ServerAt("nats://" + ln.Addr().String())
	if !ok {
		// CI runs as root, where /proc shows every socket's owner: there
		// the server CPU column must work, so this fails instead.
		if testenv.InCI() {
			t.Fatal("ServerAt found no process listening on " + ln.Addr().String())
		}
		t.Skip("cannot read other processes' sockets here (not root?)")
	}
	if s.PID != os.Getpid() {
		t.Fatalf("found pid %d, want %d", s.PID, os.Getpid())
	}
	c0 := s.CPU()
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	if c1 := s.CPU(); c1 <= c0 {
		t.Fatalf("CPU did not grow: %v -> %v", c0, c1)
	}
	if _, ok := ServerAt("nats://192.0.2.1:4222"); ok {
		t.Fatal("a remote address was metered")
	}
}

// TestPairRatioIsTheMedianOfRoundRatios: PairRatio compares two contenders
// round by round, neither of them the baseline, and the median ignores one
// odd round.
func TestPairRatioIsTheMedianOfRoundRatios(t *testing.T) {
	var rep Report
	for r, slow := range []float64{1, 1, 10, 1, 1} {
		d := time.Duration(slow * float64(time.Second))
		rep.Samples = append(rep.Samples,
			Sample{Contender: "base", Round: r + 1, Events: 1000, Duration: d / 4, CPU: CPUUsed{Client: time.Millisecond}},
			Sample{Contender: "a", Round: r + 1, Events: 1000, Duration: d, CPU: CPUUsed{Client: 3 * time.Millisecond, Server: time.Millisecond, HasServer: true, PerServer: []time.Duration{time.Millisecond}}},
			Sample{Contender: "b", Round: r + 1, Events: 1000, Duration: d / 2, CPU: CPUUsed{Client: 2 * time.Millisecond}})
	}
	rep.Samples[3*2+1].Duration *= 3 // one odd round of a
	rate, cpu, ok := rep.PairRatio("a", "b")
	if !ok || rate != 0.5 || cpu != 2 {
		t.Fatalf("PairRatio(a, b) = %v, %v, %v; want 0.5, 2, true", rate, cpu, ok)
	}
	if _, _, ok := rep.PairRatio("a", "none"); ok {
		t.Fatal("PairRatio with a contender that never ran: ok")
	}
	if got := rep.ServerPerEventOf("a", 0); got != 1 {
		t.Fatalf("ServerPerEventOf(a, 0) = %v, want 1", got)
	}
}

// TestProfileDirProfilesEachWindow: with ProfileDir every run's measured
// window leaves a CPU profile named after its contender and round.
func TestProfileDirProfilesEachWindow(t *testing.T) {
	dir := t.TempDir()
	run := func(ctx context.Context, c *Clock) (int, []time.Duration, error) {
		c.Start()
		for end := time.Now().Add(20 * time.Millisecond); time.Now().Before(end); {
		}
		c.Stop()
		return 1, nil, nil
	}
	if _, err := Compare(context.Background(), Options{Rounds: 2, ProfileDir: dir},
		Contender{Name: "a b", Run: run}, Contender{Name: "c", Run: run}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"a-b-1.prof", "a-b-2.prof", "c-1.prof", "c-2.prof"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() == 0 {
			t.Fatalf("%s is empty", f)
		}
	}
}
