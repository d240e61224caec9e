package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
)

// oversizeLimit is the size limit of the broker the OversizedMessage case
// consumes with; its raw message is four times as large.
const oversizeLimit = 4096

// oversized checks the consume-side size limit: a message over the
// consuming broker's limit, published past eventkit's publish check by a
// raw client, reaches the consumer runtime as a delivery with a DecodeErr
// wrapping a *eventkit.SizeError; the runtime dead-letters it at once
// (reason undecodable, the size error as its error text, at most
// adapterkit.TooLargeKeep bytes of the body), it is not redelivered, and the
// event published after it is handled, as is the largest event Publish
// accepts (the consume-side check allows for the binding's header names).
func (s *suite) oversized(t *testing.T) {
	if s.cfg.Limited == nil {
		t.Skip("Config.Limited not set")
	}
	b, raw := s.cfg.Limited(t, oversizeLimit)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	ctx, topic, dlqTopic := s.ctx(t), s.cfg.Topic(t), s.cfg.Topic(t)
	if p, ok := b.(broker.Provisioner); ok {
		if err := p.Provision(ctx, topic, "g"); err != nil {
			t.Fatal(err)
		}
	}
	dlq := newCollector(nil)
	s.subscribe(t, ctx, b, dlqTopic, "g", dlq.handle) // "g": the group the adapters' test topics clean up

	var mu sync.Mutex
	var handled []string
	c, err := consumer.New(b, consumer.Config{
		DeadLetterTopic: func(string) string { return dlqTopic },
		DeadLetterGroup: "g",
		Logger:          slog.New(slog.DiscardHandler),
		Retry:           consumer.RetryPolicy{MaxAttempts: 3, Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.HandleFunc(topic, "g", func(ctx context.Context, ev eventkit.Event) error {
		mu.Lock()
		handled = append(handled, ev.ID)
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("consumer Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("consumer Run did not return 30s after cancel")
		}
	})
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("consumer Run: %v", err)
	case <-time.After(s.cfg.Timeout):
		t.Fatal("consumer not ready")
	}

	// The largest event this broker's Publish accepts (its limit counts
	// the encoding or not) is accepted on consume as well.
	edge := mkEvents(1, nil)[0]
	edge.Extensions = map[string]string{"a": "1", "bb": "2", "ccc": "3", "dddd": "4"}
	edge.Data = nil
	edge.Data = bytes.Repeat([]byte("e"), oversizeLimit-edge.Size())
	for {
		err := b.Publish(ctx, topic, edge)
		if err == nil {
			break
		}
		if !errors.Is(err, eventkit.ErrTooLarge) || len(edge.Data) < 16 {
			t.Fatalf("Publish of a %d-byte event: %v", edge.Size(), err)
		}
		edge.Data = edge.Data[:len(edge.Data)-16]
	}

	body := bytes.Repeat([]byte("x"), 4*oversizeLimit)
	if err := raw(topic, nil, body); err != nil {
		t.Fatalf("raw publish: %v", err)
	}
	good := mkEvents(1, nil)[0]
	s.publish(t, ctx, b, topic, good)

	r := s.wait(t, dlq, 1)[0]
	info, ok := deadletter.InfoOf(r.ev)
	if !ok || !info.Undecodable || info.Reason != deadletter.ReasonUndecodable || info.Attempts != 1 || info.Topic != topic {
		t.Fatalf("dead letter %+v / %+v", r.ev, info)
	}
	if want := fmt.Sprintf("over the limit of %d bytes", oversizeLimit); !strings.Contains(info.Error, want) || !strings.Contains(info.Error, "on consume") {
		t.Errorf("dead letter error %q does not say %q, on consume", info.Error, want)
	}
	if n := len(r.ev.Data); n == 0 || n > adapterkit.TooLargeKeep || !bytes.Equal(r.ev.Data, body[:n]) {
		t.Errorf("dead letter keeps %d bytes of the %d-byte body, want a prefix of at most %d", n, len(body), adapterkit.TooLargeKeep)
	}
	deadline := time.Now().Add(s.cfg.Timeout)
	for {
		mu.Lock()
		got := append([]string(nil), handled...)
		mu.Unlock()
		if len(got) == 2 && got[0] == edge.ID && got[1] == good.ID || len(got) == 2 && got[0] == good.ID && got[1] == edge.ID {
			break
		}
		if len(got) > 2 || time.Now().After(deadline) {
			t.Fatalf("handled %v, want %s (%d bytes, at the limit) and %s", got, edge.ID, edge.Size(), good.ID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	quiet(t, dlq, s.cfg.AckWait+500*time.Millisecond) // dead-lettered once, not redelivered
	if st := c.Stats(); st.DeadLettered != 1 {
		t.Errorf("consumer stats %+v, want 1 dead letter", st)
	}
}
