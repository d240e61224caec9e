package adapterkit

import (
	"context"
	"errors"
	"sync"
)

// Subscriptions is a broker's set of open subscriptions and whether the
// broker is closed, under a lock of its own: Add refuses once Shut has run,
// so a subscription is either closed by the broker's Close or never handed
// out. The zero value is an empty, open set.
//
// An adapter that guards more state with a mutex of its own may call the
// methods while holding it (Subscriptions never calls out while holding
// its lock); it must not hold its mutex across a subscription's Close if
// that Close takes it (CloseAll calls Close without holding any lock).
type Subscriptions[S interface {
	comparable
	Close(context.Context) error
}] struct {
	mu     sync.Mutex
	closed bool
	set    map[S]struct{}
}

// Add puts s in the set and returns true, or returns false and leaves the
// set as it is if Shut has run (the adapter then releases s and returns
// broker.ErrClosed).
func (c *Subscriptions[S]) Add(s S) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	if c.set == nil {
		c.set = map[S]struct{}{}
	}
	c.set[s] = struct{}{}
	return true
}

// Remove takes s out of the set (a subscription that stopped); it is a
// no-op if s is not in it.
func (c *Subscriptions[S]) Remove(s S) {
	c.mu.Lock()
	delete(c.set, s)
	c.mu.Unlock()
}

// Closed reports whether Shut has run.
func (c *Subscriptions[S]) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Shut marks the set closed (Add refuses from now on) and returns the
// subscriptions it holds, for a Close that closes them its own way
// (concurrently, say). Each subscription is returned by one Shut only: a
// later call returns none.
func (c *Subscriptions[S]) Shut() []S {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	subs := make([]S, 0, len(c.set))
	for s := range c.set {
		subs = append(subs, s)
	}
	clear(c.set)
	return subs
}

// CloseAll runs Shut and closes what it returned one after the other, each
// with ctx, and returns their errors joined.
func (c *Subscriptions[S]) CloseAll(ctx context.Context) error {
	var errs []error
	for _, s := range c.Shut() {
		errs = append(errs, s.Close(ctx))
	}
	return errors.Join(errs...)
}
