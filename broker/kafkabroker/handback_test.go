package kafkabroker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/internal/testenv"
)

// retryRecords counts the records ever produced to the group's retry topic.
func retryRecords(t *testing.T, b *Broker, topic, group string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := b.adm.ListEndOffsets(ctx, b.opts.RetryTopic(topic, group))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		n += o.Offset
	})
	return n
}

// A graceful shutdown of the consumer runtime with deliveries queued behind
// busy subjects leaves them unsettled: nothing is copied to the retry
// topic, and after a restart every subject is applied in publish order.
// (Nacking them at shutdown copied them to the retry topic, and after the
// restart later events of their subject, read from the main topic, raced
// the copies.)
func TestShutdownKeepsQueuedUncommitted(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	opts := testOptions(c)
	pub := newBroker(t, opts)
	closeAll(t, pub)
	ctx := context.Background()
	topic := testenv.Name("shut")
	const n, subjects = 240, 4
	evs := mkEvents(n, subjects)
	if err := pub.Publish(ctx, topic, evs...); err != nil {
		t.Fatal(err)
	}
	tl := newTimeline()
	var mu sync.Mutex
	handled, distinct := 0, map[string]bool{}
	// run consumes until limit distinct events were handled (over both
	// runs), then shuts down.
	run := func(limit int) {
		b := newBroker(t, opts)
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = b.Close(cctx)
		}()
		cons, err := consumer.New(b, consumer.Config{
			OrderedBySubject: true, Concurrency: 2, MaxInFlight: 64,
			ShutdownTimeout: 5 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		reached := make(chan struct{})
		if err := cons.HandleFunc(topic, "g", func(ctx context.Context, ev eventkit.Event) error {
			tl.add(ev)
			mu.Lock()
			handled++
			distinct[ev.ID] = true
			if len(distinct) == limit {
				close(reached)
			}
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- cons.Run(rctx) }()
		select {
		case <-reached:
		case err := <-done:
			stop()
			t.Fatalf("Run: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatalf("handled %d distinct events of %d", len(distinct), limit)
		}
		stop()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
	// First run: stop after a few events, with more queued per subject.
	run(20)
	if got := retryRecords(t, pub, topic, "g"); got != 0 {
		t.Fatalf("shutdown put %d records on the retry topic", got)
	}
	mu.Lock()
	first := handled
	mu.Unlock()
	// Second run: everything, from the committed offsets.
	run(n)
	dups := tl.check(t, evs)
	if got := retryRecords(t, pub, topic, "g"); got != 0 {
		t.Fatalf("%d records on the retry topic after a clean shutdown and restart", got)
	}
	t.Logf("first run handled %d; %d duplicates after the restart", first, dups)
}

// A rebalance while the old owner holds deliveries: when the partition has
// moved, their contexts are cancelled and their Ack is refused
// (ErrRevoked), even after the new owner handled later records of the same
// subject; a Nack then copies nothing to the retry topic.
func TestRevokeStopsSettlement(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	opts := testOptions(c)
	pub, ba, bb := newBroker(t, opts), newBroker(t, opts), newBroker(t, opts)
	closeAll(t, pub, ba, bb)
	ctx := context.Background()
	topic := testenv.Name("revoke")
	const n = 60
	evs := mkEvents(n, 12)
	pos := map[string]int{}
	for i, e := range evs {
		pos[e.ID] = i
	}

	var mu sync.Mutex
	var held []*Delivery
	heldCh := make(chan struct{}, n)
	subA, err := ba.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		mu.Lock()
		held = append(held, d.(*Delivery)) // settled later, as a worker pool would
		mu.Unlock()
		heldCh <- struct{}{}
		return nil
	}, broker.WithMaxInFlight(2*n), broker.WithAckWait(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	waitAssigned(t, subA)
	if err := pub.Publish(ctx, topic, evs...); err != nil {
		t.Fatal(err)
	}
	for range n {
		select {
		case <-heldCh:
		case <-time.After(30 * time.Second):
			t.Fatal("the first member did not receive every record")
		}
	}

	// The new owner records when it handles each record.
	type handledRec struct {
		subject string
		pos     int
		at      time.Time
	}
	var bmu sync.Mutex
	var byB []handledRec
	bCh := make(chan struct{}, 4*n)
	subB, err := bb.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
		bmu.Lock()
		byB = append(byB, handledRec{d.Event().Subject, pos[d.Event().ID], time.Now()})
		bmu.Unlock()
		bCh <- struct{}{}
		return d.Ack(ctx)
	}, broker.WithAckWait(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	waitAssigned(t, subB)
	moved := map[int32]bool{}
	for _, p := range subB.(*Subscription).Assigned() {
		moved[p] = true
	}
	var revoked []*Delivery
	mu.Lock()
	for _, d := range held {
		if moved[d.Record().Partition] {
			revoked = append(revoked, d)
		}
	}
	mu.Unlock()
	if len(revoked) == 0 {
		t.Fatal("no held record is on a partition that moved")
	}
	// The new owner reads every record of the moved partitions again.
	for range revoked {
		select {
		case <-bCh:
		case <-time.After(30 * time.Second):
			t.Fatal("the new owner did not handle the moved records")
		}
	}
	for _, d := range revoked {
		select {
		case <-d.Context().Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("the context of a revoked delivery (partition %d) was not cancelled", d.Record().Partition)
		}
	}
	// The old owner now tries to settle: Ack is refused, Nack copies
	// nothing.
	bmu.Lock()
	laterByB := map[string]bool{}
	for _, h := range byB {
		laterByB[h.subject] = true
	}
	bmu.Unlock()
	for i, d := range revoked {
		if !laterByB[d.Event().Subject] {
			t.Fatalf("the new owner handled nothing of subject %s", d.Event().Subject)
		}
		if i%2 == 1 {
			if err := d.Nack(ctx, 0); err != nil {
				t.Errorf("Nack of a revoked delivery: %v", err)
			}
			continue
		}
		if err := d.Ack(ctx); !errors.Is(err, ErrRevoked) {
			t.Fatalf("Ack of a revoked delivery (subject %s, after the new owner handled later records of it) = %v, want ErrRevoked", d.Event().Subject, err)
		}
	}
	if got := retryRecords(t, pub, topic, "g"); got != 0 {
		t.Fatalf("Nack of revoked deliveries put %d records on the retry topic", got)
	}
	// Settle what the old owner still owns, so that it closes at once.
	mu.Lock()
	for _, d := range held {
		if !moved[d.Record().Partition] {
			_ = d.Ack(ctx)
		}
	}
	mu.Unlock()
	t.Logf("%d of %d held deliveries were on the %d partitions that moved", len(revoked), n, len(moved))
}
