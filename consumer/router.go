package consumer

import (
	"context"
	"fmt"
	"sync"

	"github.com/eventkit/eventkit"
)

// Handler handles one event. Returning nil acks it; an error retries it
// (RetryAfter chooses the delay) until the attempts are used up, then
// dead-letters it; eventkit.Permanent(err) dead-letters it at once.
type Handler interface {
	HandleEvent(ctx context.Context, ev eventkit.Event) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, ev eventkit.Event) error

// HandleEvent calls f.
func (f HandlerFunc) HandleEvent(ctx context.Context, ev eventkit.Event) error { return f(ctx, ev) }

// Router is a Handler that dispatches on the event type to typed handlers
// registered with On, decoding payloads through a registry.
//
// An event whose type has no handler is passed to the handler set with
// Unhandled; without one it is dead-lettered at once with deadletter.ReasonNoRoute (an
// error wrapping ErrNoRoute), so that a type that a consumer does not know
// yet, during a rolling deploy, is kept rather than acked away. Call
// IgnoreUnrouted when the topic carries types that this consumer does not
// care about: they are then acked and skipped (and, with an inbox, recorded
// as processed). A payload that the registry
// cannot decode (unknown version, wrong content type, bad bytes) is a
// permanent error: the event is dead-lettered at once.
type Router struct {
	reg       *eventkit.Registry
	mu        sync.RWMutex
	routes    map[string]Handler
	unhandled Handler
	ignore    bool
}

// NewRouter returns a router decoding through reg (nil:
// eventkit.DefaultRegistry).
func NewRouter(reg *eventkit.Registry) *Router {
	return &Router{reg: reg, routes: map[string]Handler{}}
}

// On registers fn for events of eventType, whose payload is decoded into T
// with eventkit.Decode[T]. It panics if eventType already has a handler.
func On[T any](r *Router, eventType string, fn func(ctx context.Context, v T, ev eventkit.Event) error) {
	r.Route(eventType, HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
		v, err := eventkit.Decode[T](r.reg, ev)
		if err != nil {
			return eventkit.Permanent(err)
		}
		return fn(ctx, v, ev)
	}))
}

// Route registers an untyped handler for eventType. It panics if eventType
// already has a handler.
func (r *Router) Route(eventType string, h Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.routes[eventType]; dup {
		panic(fmt.Sprintf("consumer: event type %q already has a handler", eventType))
	}
	r.routes[eventType] = h
}

// Unhandled sets the handler for events of types without a route.
func (r *Router) Unhandled(h Handler) {
	r.mu.Lock()
	r.unhandled = h
	r.mu.Unlock()
}

// IgnoreUnrouted makes the router ack and skip events of types without a
// route (and without an Unhandled handler) instead of dead-lettering them.
func (r *Router) IgnoreUnrouted() {
	r.mu.Lock()
	r.ignore = true
	r.mu.Unlock()
}

// HandleEvent implements Handler.
func (r *Router) HandleEvent(ctx context.Context, ev eventkit.Event) error {
	r.mu.RLock()
	h, ok := r.routes[ev.Type]
	if !ok {
		h = r.unhandled
	}
	ignore := r.ignore
	r.mu.RUnlock()
	if h == nil {
		if ignore {
			return nil
		}
		return eventkit.Permanent(fmt.Errorf("%w %q", ErrNoRoute, ev.Type))
	}
	return h.HandleEvent(ctx, ev)
}
