package adapterkit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eventkit/eventkit/broker/adapterkit"
)

type fakeSub struct {
	closes atomic.Int32
	err    error
}

func (f *fakeSub) Close(context.Context) error {
	f.closes.Add(1)
	return f.err
}

// Every subscription Add accepted is closed exactly once by the CloseAll
// calls, however they interleave with Add and with each other; one Add
// refused is never closed; Add after CloseAll refuses.
func TestSubscriptionsCloseAllConcurrentWithAdd(t *testing.T) {
	for round := 0; round < 50; round++ {
		var set adapterkit.Subscriptions[*fakeSub]
		const adders, each = 4, 50
		subs := make([]*fakeSub, adders*each)
		added := make([]bool, len(subs))
		for i := range subs {
			subs[i] = &fakeSub{}
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for a := 0; a < adders; a++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := a * each; i < (a+1)*each; i++ {
					added[i] = set.Add(subs[i])
				}
			}()
		}
		for c := 0; c < 2; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if err := set.CloseAll(context.Background()); err != nil {
					t.Errorf("CloseAll = %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if !set.Closed() {
			t.Fatal("Closed() = false after CloseAll")
		}
		for i, s := range subs {
			want := int32(0)
			if added[i] {
				want = 1
			}
			if n := s.closes.Load(); n != want {
				t.Fatalf("round %d: sub %d (added %v) closed %d times, want %d", round, i, added[i], n, want)
			}
		}
		late := &fakeSub{}
		if set.Add(late) {
			t.Fatal("Add after CloseAll = true, want false")
		}
		if err := set.CloseAll(context.Background()); err != nil || late.closes.Load() != 0 {
			t.Fatalf("second CloseAll = %v, late sub closed %d times", err, late.closes.Load())
		}
	}
}

// A removed subscription is not closed; Shut hands each subscription out
// once and CloseAll joins the subscriptions' errors.
func TestSubscriptionsRemoveShutErrors(t *testing.T) {
	var set adapterkit.Subscriptions[*fakeSub]
	if set.Closed() {
		t.Fatal("zero value closed")
	}
	gone, a, b := &fakeSub{}, &fakeSub{err: errors.New("a")}, &fakeSub{err: errors.New("b")}
	for _, s := range []*fakeSub{gone, a, b} {
		if !set.Add(s) {
			t.Fatal("Add to an open set = false")
		}
	}
	set.Remove(gone)
	set.Remove(&fakeSub{}) // not in the set: no-op
	err := set.CloseAll(context.Background())
	if !errors.Is(err, a.err) || !errors.Is(err, b.err) {
		t.Fatalf("CloseAll = %v, want both errors", err)
	}
	if gone.closes.Load() != 0 || a.closes.Load() != 1 || b.closes.Load() != 1 {
		t.Fatalf("closes: removed %d, a %d, b %d", gone.closes.Load(), a.closes.Load(), b.closes.Load())
	}
	if got := set.Shut(); len(got) != 0 {
		t.Fatalf("Shut after CloseAll = %d subscriptions, want none", len(got))
	}

	var other adapterkit.Subscriptions[*fakeSub]
	other.Add(a)
	if got := other.Shut(); len(got) != 1 || got[0] != a || !other.Closed() {
		t.Fatalf("Shut = %v, closed %v", got, other.Closed())
	}
	if a.closes.Load() != 1 {
		t.Fatal("Shut closed a subscription")
	}
}
