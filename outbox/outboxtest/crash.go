package outboxtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/memorybroker"
)

// CrashConfig sizes a crash test.
type CrashConfig struct {
	Events    int // total events written (default 10,000)
	Subjects  int // distinct subjects (default 50)
	PerTx     int // events per transaction (default 25)
	Kills     int // relay kills (default 8)
	BatchSize int // relay batch size (default 200)
	// Relay builds the relays (default Polling).
	Relay RelayFactory
}

// Crash streams cfg.Events events through the outbox into an in-memory
// broker while the relay is killed cfg.Kills times at random points (half of
// them right after the broker confirmed a Publish call, before the relay
// recorded it: the worst moment), and restarted each time as a fresh relay.
// A subscriber checks that every event arrived, per-subject order of first
// arrivals, and that duplicates come only from the batch in flight at each
// kill (at most Kills x BatchSize). It logs the duplicate count.
func Crash(t *testing.T, h Harness, cfg CrashConfig) {
	if cfg.Events <= 0 {
		cfg.Events = 10000
	}
	if cfg.Subjects <= 0 {
		cfg.Subjects = 50
	}
	if cfg.PerTx <= 0 {
		cfg.PerTx = 25
	}
	if cfg.Kills <= 0 {
		cfg.Kills = 8
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 200
	}
	ctx, cancelAll := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelAll()

	mem := memorybroker.New(memorybroker.Options{})
	defer func() { _ = mem.Close(context.Background()) }()
	var mu sync.Mutex
	var got []eventkit.Event
	distinctN := atomic.Int64{}
	seen := map[string]bool{}
	sub, err := mem.Subscribe(ctx, "crash", "checker", broker.AutoAck(func(_ context.Context, e eventkit.Event, _ int) error {
		mu.Lock()
		got = append(got, e)
		if !seen[e.ID] {
			seen[e.ID] = true
			distinctN.Add(1)
		}
		mu.Unlock()
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close(context.Background()) }()

	// The writer.
	sent := map[string][]string{}
	writerDone := make(chan error, 1)
	go func() {
		for i := 0; i < cfg.Events; i += cfg.PerTx {
			tx, err := h.Begin(ctx)
			if err != nil {
				writerDone <- err
				return
			}
			evs := make([]eventkit.Event, 0, cfg.PerTx)
			for j := i; j < min(i+cfg.PerTx, cfg.Events); j++ {
				evs = append(evs, eventkit.New("crash.event", "application/octet-stream", fmt.Appendf(nil, "%08d", j),
					eventkit.WithSubject(fmt.Sprint("subj-", j%cfg.Subjects))))
			}
			if err := tx.Add(ctx, "crash", evs...); err != nil {
				_ = tx.Rollback(ctx)
				writerDone <- err
				return
			}
			if err := tx.Commit(ctx); err != nil {
				writerDone <- err
				return
			}
			for _, e := range evs {
				sent[e.Subject] = append(sent[e.Subject], e.ID)
			}
		}
		writerDone <- nil
	}()

	// The relay, killed and restarted.
	rcfg := fastConfig(t)
	rcfg.BatchSize = cfg.BatchSize
	rcfg.LockRetryInterval = 20 * time.Millisecond
	var confirmedAtKill atomic.Int64
	kills := 0
	for kills < cfg.Kills {
		rctx, kill := context.WithCancel(ctx)
		pub := &killer{next: mem}
		midBatch := kills%2 == 0
		if midBatch {
			// Kill right after the broker accepted a Publish call, a few calls in.
			pub.killAfter.Store(int64(1 + rand.IntN(15)))
			pub.kill = kill
		}
		relay := cfg.Relay.new(t, h, pub, rcfg)
		done := make(chan error, 1)
		go func() { done <- relay.Run(rctx) }()
		if midBatch {
			select {
			case <-rctx.Done():
			case <-time.After(5 * time.Second): // nothing left to publish
				kill()
			}
		} else {
			time.Sleep(time.Duration(30+rand.IntN(300)) * time.Millisecond)
			kill()
		}
		err := <-done
		kill()
		if err != nil {
			t.Fatalf("relay.Run: %v", err)
		}
		kills++
		confirmedAtKill.Store(distinctN.Load())
		t.Logf("kill %d (%s): %d distinct events received so far; relay %v", kills,
			map[bool]string{true: "right after a confirm", false: "at a random time"}[midBatch], distinctN.Load(), relay.Stats())
	}
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}

	// The last relay runs to the end.
	relay := cfg.Relay.new(t, h, mem, rcfg)
	StartRelay(t, relay)
	WaitFor(t, 90*time.Second, "every event delivered", func() bool { return distinctN.Load() == int64(cfg.Events) })
	WaitFor(t, 10*time.Second, "backlog drained", func() bool {
		st, err := h.Store.Status(ctx)
		return err == nil && st.Backlog == 0
	})
	mu.Lock()
	stream := append([]eventkit.Event(nil), got...)
	mu.Unlock()
	dups, err := CheckStream(stream, sent)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("crash test: %d events, %d kills, %d received, %d duplicates (bound %d = kills x batch size)",
		cfg.Events, kills, len(stream), dups, kills*cfg.BatchSize)
	if dups > kills*cfg.BatchSize {
		t.Fatalf("%d duplicates: more than the batch in flight at each kill", dups)
	}
}

// killer forwards to next and, on the killAfter-th call, cancels the relay
// (kill) after the broker accepted the events and before the relay hears it.
type killer struct {
	next      broker.Publisher
	calls     atomic.Int64
	killAfter atomic.Int64
	kill      context.CancelFunc
}

func (k *killer) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	if err := k.next.Publish(ctx, topic, events...); err != nil {
		return err
	}
	if n := k.calls.Add(1); k.kill != nil && n == k.killAfter.Load() {
		k.kill()
	}
	return nil
}
