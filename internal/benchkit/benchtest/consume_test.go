package benchtest

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit/internal/benchkit"
)

// measure runs body as the one contender of a one-round comparison and
// returns its measured window.
func measure(t *testing.T, body func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error)) time.Duration {
	t.Helper()
	rep, err := benchkit.Compare(context.Background(), benchkit.Options{Rounds: 1}, benchkit.Contender{Name: "c", Run: body})
	if err != nil {
		t.Fatal(err)
	}
	return rep.Samples[0].Duration
}

// TestCounterStopsTheClockAtTheNth: the n-th Add ends the measured window
// (what follows it is not timed) and releases Wait; short of n, Wait fails
// saying how many were counted.
func TestCounterStopsTheClockAtTheNth(t *testing.T) {
	d := measure(t, func(_ context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
		clock.Start()
		c := NewCounter(clock, 3)
		go func() {
			for range 3 {
				c.Add()
			}
		}()
		if err := c.Wait("x", 10*time.Second); err != nil {
			return 0, nil, err
		}
		time.Sleep(200 * time.Millisecond) // after the window
		return 3, nil, nil
	})
	if d >= 200*time.Millisecond {
		t.Fatalf("window %v: the clock did not stop at the 3rd event", d)
	}
	c := NewCounter(&benchkit.Clock{}, 3)
	c.Add()
	if err := c.Wait("x", 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "x: consumed 1 of 3") {
		t.Fatalf("Wait short of n: %v", err)
	}
}

type msg struct{ acks *atomic.Int32 }

func (m msg) Ack() bool { m.acks.Add(1); return true }

// TestDrainAcksNAndStopsTheClock: Drain subscribes to the topic it is given,
// acks exactly n messages and stops the clock at the n-th, cancelling the
// subscription's context when it returns.
func TestDrainAcksNAndStopsTheClock(t *testing.T) {
	var acks atomic.Int32
	ch := make(chan msg, 10)
	for range 10 {
		ch <- msg{&acks}
	}
	var subCtx context.Context
	d := measure(t, func(ctx context.Context, clock *benchkit.Clock) (int, []time.Duration, error) {
		clock.Start()
		n, lat, err := Drain(ctx, clock, func(ctx context.Context, topic string) (<-chan msg, error) {
			if topic != "t" {
				t.Errorf("subscribed to %q", topic)
			}
			subCtx = ctx
			return ch, nil
		}, "t", 4, "x")
		time.Sleep(200 * time.Millisecond) // after the window
		return n, lat, err
	})
	if got := acks.Load(); got != 4 {
		t.Fatalf("%d acks, want 4", got)
	}
	if d >= 200*time.Millisecond {
		t.Fatalf("window %v: the clock did not stop at the 4th message", d)
	}
	if subCtx.Err() == nil {
		t.Fatal("the subscription's context is not cancelled")
	}
}
