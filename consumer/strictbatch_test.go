package consumer_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

// batchCountingSeq wraps the SQL inbox and records the size of every
// strict batch.
type batchCountingSeq struct {
	*sqlinbox.Inbox
	batches, largest atomic.Int64
}

func (c *batchCountingSeq) ProcessInOrderBatch(ctx context.Context, ps []inbox.Position, fn func(context.Context, int, int) error) ([]error, error) {
	c.batches.Add(1)
	for {
		m := c.largest.Load()
		if int64(len(ps)) <= m || c.largest.CompareAndSwap(m, int64(len(ps))) {
			break
		}
	}
	return c.Inbox.ProcessInOrderBatch(ctx, ps, fn)
}

// StrictBatched applies many subjects' events per transaction, each
// subject's in sequence order even when its events arrive reversed in
// pairs, and a head that fails twice is retried in place, alone, counted
// once per failure: its subject's later events wait for it and the other
// subjects go on; nothing is applied twice.
func TestStrictBatchedAppliesInBatchesAndRetriesTheHead(t *testing.T) {
	t.Parallel()
	for _, d := range strictDBs {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			const subjects, per = 6, 20
			sink := newOrderSink(t, d, subjects)
			seq := &batchCountingSeq{Inbox: sink.in}
			var failMu sync.Mutex
			failsLeft := 2 // s1's event 5 fails twice
			handler := consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
				if ev.Subject == "s1" && string(ev.Data) == strconv.Quote("5") {
					failMu.Lock()
					fail := failsLeft > 0
					failsLeft--
					failMu.Unlock()
					if fail {
						return errors.New("transient")
					}
				}
				return sink.handler.HandleEvent(ctx, ev)
			})
			br := newBroker(t)
			topic := testenv.Name("sbt")
			var evs []eventkit.Event
			for n := 1; n <= per; n += 2 {
				for s := range subjects {
					evs = append(evs, seqEvent(s, n+1), seqEvent(s, n)) // each pair reversed
				}
			}
			publish(t, br, topic, evs...)
			c := newConsumer(t, br, consumer.Config{Concurrency: 2, Inbox: seq, Retry: fastRetry(5),
				Mode: consumer.StrictBatched(16, 20*time.Millisecond)})
			if err := c.Handle(topic, "g", handler); err != nil {
				t.Fatal(err)
			}
			r := start(t, c)
			eventually(t, 60*time.Second, "every event applied", func() bool { return sink.total() >= subjects*per })
			eventually(t, 10*time.Second, "deliveries settled", func() bool { return r.c.Stats().InFlight == 0 })
			sink.check(per)
			st := r.c.Stats()
			if v := sink.violations.Load(); v != 0 {
				t.Fatalf("%d order violations", v)
			}
			if st.Failed != 2 || st.Handled != subjects*per {
				t.Fatalf("stats %+v: want 2 failures and %d handled", st, subjects*per)
			}
			if seq.largest.Load() < 4 {
				t.Fatalf("largest strict batch %d events (%d batches): the events were not batched", seq.largest.Load(), seq.batches.Load())
			}
			t.Logf("%s: %d strict batches, largest %d; stats %+v", d.name, seq.batches.Load(), seq.largest.Load(), st)
		})
	}
}

// StrictBatched needs an inbox.SequenceBatcher: a Sequencer alone is
// refused by New with an error naming the interface.
func TestStrictBatchedNeedsSequenceBatcher(t *testing.T) {
	type seqOnly struct{ inbox.Sequencer }
	sink := newOrderSink(t, strictDBs[2], 1)
	_, err := consumer.New(newBroker(t), consumer.Config{Inbox: struct {
		inbox.Inbox
		seqOnly
	}{sink.in, seqOnly{sink.in}}, Mode: consumer.StrictBatched(8, 0)})
	if err == nil || !strings.Contains(err.Error(), "inbox.SequenceBatcher") {
		t.Fatalf("New: %v, want an error naming inbox.SequenceBatcher", err)
	}
	var me *consumer.ModeError
	if _, err := consumer.New(newBroker(t), consumer.Config{Inbox: sink.in, Mode: consumer.StrictBatched(1, 0)}); !errors.As(err, &me) {
		t.Fatalf("StrictBatched(1): %v, want a *ModeError", err)
	}
	if got := consumer.StrictBatched(64, 2*time.Millisecond).String(); got != "strict-batched(64, 2ms)" {
		t.Fatalf("String: %q", got)
	}
}
