package adapterkit

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The first Close runs fn; a concurrent one waits for it, or for its own
// ctx; a later one returns nil; only the first reports fn's error.
func TestCloseOnce(t *testing.T) {
	var c CloseOnce
	release, running := make(chan struct{}), make(chan struct{})
	calls := 0
	boom := errors.New("boom")
	first := make(chan error, 1)
	go func() {
		first <- c.Close(context.Background(), func(context.Context) error {
			calls++
			close(running)
			<-release
			return boom
		})
	}()
	<-running
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.Close(short, func(context.Context) error { calls++; return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close while the first runs, ctx ending first = %v, want DeadlineExceeded", err)
	}
	second := make(chan error, 1)
	go func() { second <- c.Close(context.Background(), func(context.Context) error { calls++; return nil }) }()
	select {
	case err := <-second:
		t.Fatalf("concurrent Close returned %v before the first finished", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-first; !errors.Is(err, boom) {
		t.Fatalf("first Close = %v, want its error", err)
	}
	if err := <-second; err != nil {
		t.Fatalf("concurrent Close = %v, want nil", err)
	}
	if err := c.Close(context.Background(), func(context.Context) error { calls++; return nil }); err != nil || calls != 1 {
		t.Fatalf("later Close = %v with fn run %d times, want nil and 1", err, calls)
	}
}
