package consumer

import (
	"errors"
	"fmt"
	"time"
)

// ErrAlreadyRunning is returned by Run when called twice.
var ErrAlreadyRunning = errors.New("consumer: already running")

// ErrNoRoute is wrapped (as a permanent error) by the error a Router returns
// for an event type it has no route for: the runtime dead-letters the event
// at once with deadletter.ReasonNoRoute.
var ErrNoRoute = errors.New("consumer: no route for the event type")

// RetryAfterError asks for the next attempt after Delay instead of the
// policy's backoff (see RetryAfter). It still counts as an attempt.
type RetryAfterError struct {
	Delay time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("retry after %s: %v", e.Delay, e.Err)
}
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter wraps err so that the runtime retries after d (a rate limit,
// a Retry-After header) rather than after the backoff of its policy. The
// attempt still counts toward RetryPolicy.MaxAttempts. RetryAfter(d, nil)
// is nil.
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		return nil
	}
	return &RetryAfterError{Delay: d, Err: err}
}

// PanicError is the error a handler's recovered panic turns into. It is
// retried like any other error.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }
