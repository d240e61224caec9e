package consumer

import (
	"context"
	"sync"
	"time"
)

// timeoutCtx is context.WithTimeout for a handler call without its cost
// per event: no timer and no registration with the parent until someone
// asks for Done (a handler that never waits on its context, or returns
// before it does, pays one small allocation). Err reports the deadline
// and the parent's end without a channel; Done arms a timer for the time
// left and a context.AfterFunc on the parent, so a handler blocked on
// Done is still cancelled at the configured time. end (the call
// returned) cancels it like the CancelFunc of context.WithTimeout.
//
// also, if not nil, is a second context whose end cancels c (with
// context.Canceled) but whose values and deadline c does not take: the
// delivery's own context (broker.DeliveryContext, e.g. a Kafka partition
// revoked), watched the same lazy way instead of a context.WithCancel and
// a context.AfterFunc per event.
type timeoutCtx struct {
	context.Context // the parent
	also            context.Context
	deadline        time.Time
	meta            any // Meta, the value of metaKey{}: no context.WithValue per call

	mu     sync.Mutex
	done   chan struct{} // nil until Done is called
	closed bool
	err    error
	timer  *time.Timer
	stopP  func() bool // the context.AfterFunc on the parent
	stopA  func() bool // the context.AfterFunc on also (nil without also)
}

func withTimeout(parent, also context.Context, start time.Time, d time.Duration, meta any) *timeoutCtx {
	return &timeoutCtx{Context: parent, also: also, deadline: start.Add(d), meta: meta}
}

func (c *timeoutCtx) Value(key any) any {
	if key == (metaKey{}) {
		return c.meta
	}
	return c.Context.Value(key)
}

func (c *timeoutCtx) Deadline() (time.Time, bool) {
	if pd, ok := c.Context.Deadline(); ok && pd.Before(c.deadline) {
		return pd, true
	}
	return c.deadline, true
}

// errLocked is the error c has now, fixing it once it is non-nil.
func (c *timeoutCtx) errLocked() error {
	if c.err != nil || c.done != nil { // armed: the timer or the parent sets err
		return c.err
	}
	if err := c.Context.Err(); err != nil {
		c.err = err
	} else if c.also != nil && c.also.Err() != nil {
		c.err = context.Canceled
	} else if !time.Now().Before(c.deadline) {
		c.err = context.DeadlineExceeded
	}
	return c.err
}

func (c *timeoutCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errLocked()
}

func (c *timeoutCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	err := c.errLocked()
	c.done = make(chan struct{})
	if err != nil {
		c.closed = true
		close(c.done)
		return c.done
	}
	c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	c.stopP = context.AfterFunc(c.Context, func() { c.cancel(c.Context.Err()) })
	if c.also != nil {
		c.stopA = context.AfterFunc(c.also, func() { c.cancel(context.Canceled) })
	}
	return c.done
}

func (c *timeoutCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	if c.done != nil && !c.closed {
		c.closed = true
		close(c.done)
	}
}

// end is called when the handler returned: it releases the timer and the
// parent hook, and cancels c for anything the handler left running.
func (c *timeoutCtx) end() {
	c.mu.Lock()
	t, stop, stopA := c.timer, c.stopP, c.stopA
	c.mu.Unlock()
	if t != nil {
		t.Stop()
		stop()
	}
	if stopA != nil {
		stopA()
	}
	c.cancel(context.Canceled)
}
