package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelayGrowsToMax(t *testing.T) {
	p := Policy{Min: 10 * time.Millisecond, Max: 70 * time.Millisecond}
	want := []time.Duration{10, 20, 40, 70, 70}
	for i, w := range want {
		if got := p.Delay(i + 1); got != w*time.Millisecond {
			t.Fatalf("Delay(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	p.Multiplier = 3
	if got := p.Delay(2); got != 30*time.Millisecond {
		t.Fatalf("Delay(2) with multiplier 3 = %v", got)
	}
	if got := p.Delay(1000000); got != 70*time.Millisecond {
		t.Fatalf("Delay of a huge attempt = %v, want the max", got)
	}
}

func TestNextFollowsPrevious(t *testing.T) {
	p := Policy{Min: time.Second, Max: 5 * time.Second}
	var d time.Duration
	var got []time.Duration
	for range 5 {
		d = p.Next(d)
		got = append(got, d)
	}
	want := []time.Duration{1, 2, 4, 5, 5}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("Next sequence %v, want %v seconds", got, want)
		}
	}
}

func TestJitterStaysInBounds(t *testing.T) {
	p := Policy{Min: 100 * time.Millisecond, Max: time.Second, Jitter: 0.2}
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 2000 {
		d := p.Delay(1)
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < 80*time.Millisecond || hi > 120*time.Millisecond {
		t.Fatalf("jittered delays in [%v, %v], want within ±20%% of 100ms", lo, hi)
	}
	if hi-lo < 20*time.Millisecond {
		t.Fatalf("jittered delays in [%v, %v]: no spread", lo, hi)
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep reported the whole delay on a cancelled context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep of 1ms did not complete")
	}
}
