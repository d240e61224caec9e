// Package backoff is eventkit's one exponential backoff: the delay after
// failed attempt n is Min times Multiplier^(n-1), never above Max, spread
// by up to ±Jitter of itself; Sleep waits for a delay or until the context
// ends. The consumer's retry policy, the relays and the adapters'
// reconnect loops all take their delays from it.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff. The zero Multiplier means 2; Jitter is
// a fraction in [0, 1] (0: none).
type Policy struct {
	Min, Max   time.Duration
	Multiplier float64
	Jitter     float64
}

func (p Policy) mult() float64 {
	if p.Multiplier < 1 {
		return 2
	}
	return p.Multiplier
}

// Delay returns the delay after failed attempt n (from 1).
func (p Policy) Delay(attempt int) time.Duration {
	d := float64(p.Min)
	for i := 1; i < attempt && d < float64(p.Max); i++ {
		d *= p.mult()
	}
	return p.jitter(min(d, float64(p.Max)))
}

// Next returns the delay that follows prev: Min when prev is not positive,
// else prev times Multiplier, at most Max, with jitter applied to the
// result. Loops that keep the last delay rather than an attempt count use
// it.
func (p Policy) Next(prev time.Duration) time.Duration {
	if prev <= 0 {
		return p.jitter(float64(p.Min))
	}
	return p.jitter(min(float64(prev)*p.mult(), float64(p.Max)))
}

func (p Policy) jitter(d float64) time.Duration {
	if p.Jitter > 0 {
		d += d * min(p.Jitter, 1) * (2*rand.Float64() - 1)
	}
	return time.Duration(d)
}

// Sleep waits for d or until ctx ends, and reports whether the whole delay
// passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
