package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eventkit/eventkit/internal/testenv"
)

// TestBenchCompareRaw runs publish --compare raw: the raw client and
// eventkit alternate (raw, eventkit, eventkit, raw), every run reports its
// CPU per event, the summary has both with ratios to raw, and nothing of
// the bench is left on the server.
func TestBenchCompareRaw(t *testing.T) {
	t.Parallel()
	lockBench(t)
	natsURL := testenv.NATS.URL(t)
	before := natsStreams(t, natsURL)
	svg := filepath.Join(t.TempDir(), "out.svg")
	args := []string{"bench", "publish", "--broker", natsURL, "--events", "2000", "--compare", "raw", "--rounds", "2", "--json", "--plot", svg}
	r := run(t, "", args...).mustOK(t, args...)
	var out struct {
		Runs []struct {
			Contender string  `json:"contender"`
			Round     int     `json:"round"`
			Events    int     `json:"events"`
			Rate      float64 `json:"events_per_second"`
			ClientCPU float64 `json:"client_cpu_us_per_event"`
		} `json:"runs"`
		Summary []struct {
			Contender string  `json:"contender"`
			VsRaw     float64 `json:"events_per_second_vs_raw"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	var order []string
	for _, x := range out.Runs {
		order = append(order, x.Contender)
		if x.Events != 2000 || x.Rate <= 0 || x.ClientCPU <= 0 {
			t.Errorf("run %+v", x)
		}
	}
	if got := strings.Join(order, ","); got != "raw,eventkit,eventkit,raw" {
		t.Fatalf("runs in order %s", got)
	}
	if len(out.Summary) != 2 || out.Summary[0].VsRaw != 1 || out.Summary[1].VsRaw <= 0 {
		t.Fatalf("summary %+v", out.Summary)
	}
	b, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(b, new(struct{})); err != nil || !strings.Contains(string(b), "<polyline") {
		t.Fatalf("--plot wrote no chart (%v):\n%s", err, b)
	}
	for name := range natsStreams(t, natsURL) {
		if !before[name] && strings.Contains(strings.ToLower(name), "bench") {
			t.Errorf("bench --compare left stream %s behind", name)
		}
	}
}

// TestBenchCompareRawUnsupported: an unknown baseline is one error, before
// anything connects.
func TestBenchCompareRawUnsupported(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"publish", "consume"} {
		r := run(t, "", "bench", cmd, "--broker", "nats://127.0.0.1:1", "--compare", "watermill", "--events", "10")
		if r.code == 0 || !strings.Contains(r.stderr, `--compare "watermill"`) {
			t.Fatalf("%s --compare watermill: exit %d\n%s", cmd, r.code, r.stderr)
		}
	}
}

// TestBenchCompareInterrupted sends SIGINT to a running --compare: it must
// print the runs measured so far and their summary, clean up and exit
// non-zero.
func TestBenchCompareInterrupted(t *testing.T) {
	t.Parallel()
	lockBench(t)
	natsURL := testenv.NATS.URL(t)
	before := natsStreams(t, natsURL)
	cmd := exec.Command(bin, "bench", "publish", "--broker", natsURL, "--events", "20000", "--batch", "10", "--compare", "raw", "--rounds", "1000")
	var out, errb bytes.Buffer
	cmd.Stderr = &errb
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once the first run was measured (not after a fixed time: a
	// loaded machine may not have finished one yet).
	measured := make(chan struct{})
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pipe)
		seen := false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if !seen && strings.Contains(sc.Text(), "round 1  raw") {
				seen = true
				close(measured)
			}
		}
	}()
	select {
	case <-measured:
	case <-copied:
	case <-time.After(3 * time.Minute):
		t.Error("no run measured within 3m")
	}
	_ = cmd.Process.Signal(os.Interrupt)
	<-copied
	if err := cmd.Wait(); err == nil {
		t.Fatalf("an interrupted bench exited 0\n%s", out.String())
	}
	if !strings.Contains(out.String(), "round 1  raw") || !strings.Contains(out.String(), "summary") || !strings.Contains(errb.String(), "interrupted") {
		t.Fatalf("interrupted --compare printed\nstdout: %s\nstderr: %s", out.String(), errb.String())
	}
	for name := range natsStreams(t, natsURL) {
		if !before[name] && strings.Contains(strings.ToLower(name), "bench") {
			t.Errorf("interrupted bench left stream %s behind", name)
		}
	}
}
