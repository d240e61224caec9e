package adapterkit

import (
	"context"
	"sync"
)

// CloseOnce gives a broker the Close behaviour of broker.Broker: the first
// call runs the close, every later or concurrent call returns when that
// close has finished (or its own ctx ends first), and only the first call
// reports the close's error. The zero value is ready to use.
type CloseOnce struct {
	mu      sync.Mutex
	started bool
	done    chan struct{}
}

// Close runs fn(ctx) on the first call and waits for it on the others.
func (c *CloseOnce) Close(ctx context.Context, fn func(context.Context) error) error {
	c.mu.Lock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	first, done := !c.started, c.done
	c.started = true
	c.mu.Unlock()
	if first {
		defer close(done)
		return fn(ctx)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
