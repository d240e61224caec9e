package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/internal/sqlutil"
)

// RunPartitions runs the partition cases on outboxes that factory returns
// (not yet split; the store must implement outbox.Partitioned and
// outbox.PartitionSetter): relays share the partitions and rebalance when
// one joins or leaves, a live lease is never taken (a dead relay's
// partitions wait for its lease to expire), the partition count cannot
// change under running relays, and per-subject order holds while relays
// come and go.
func RunPartitions(t *testing.T, factory Factory) {
	run := func(name string, f func(*testing.T, Harness)) {
		t.Run(name, func(t *testing.T) { t.Parallel(); f(t, factory(t)) })
	}
	run("SharesAndRebalances", testPartShares)
	run("LiveLeaseNotTaken", testPartLiveLease)
	run("CountFixedWhileRelaysRun", testPartCount)
	run("OrderThroughHandovers", testPartHandovers)
}

func setPartitions(t *testing.T, h Harness, n int) {
	t.Helper()
	ps, ok := h.Store.(outbox.PartitionSetter)
	if !ok {
		t.Skip("store cannot be partitioned")
	}
	if err := ps.SetPartitions(context.Background(), n); err != nil {
		t.Fatal(err)
	}
}

func partCfg(t testing.TB, inst string) outbox.RelayConfig {
	cfg := fastConfig(t)
	cfg.Instance = inst
	cfg.LeaseTTL = 800 * time.Millisecond
	return cfg
}

// checkShares fails unless the relays' partitions are disjoint, cover
// 0..n-1, and none leads more than ceil(n/len(rs)).
func sharesOK(rs []*outbox.Relay, n int) error {
	seen := map[int]int{}
	share := (n + len(rs) - 1) / len(rs)
	for i, r := range rs {
		ps := r.Health().Partitions
		if len(ps) > share {
			return fmt.Errorf("relay %d leads %v, more than its share %d", i, ps, share)
		}
		for _, p := range ps {
			if j, ok := seen[p]; ok {
				return fmt.Errorf("partition %d led by relays %d and %d", p, j, i)
			}
			seen[p] = i
		}
	}
	if len(seen) != n {
		return fmt.Errorf("%d of %d partitions led", len(seen), n)
	}
	return nil
}

func testPartShares(t *testing.T, h Harness) {
	const n = 8
	setPartitions(t, h, n)
	rec := &Recorder{}
	var rs []*outbox.Relay
	var stops []func()
	add := func() {
		r := outbox.NewRelay(h.Store, rec, partCfg(t, fmt.Sprint("r", len(rs))))
		rs = append(rs, r)
		stops = append(stops, StartRelay(t, r))
	}
	for range 3 {
		add()
	}
	WaitFor(t, 10*time.Second, "3 relays to share 8 partitions", func() bool { return sharesOK(rs, n) == nil })
	add() // a relay joins: the others hand partitions over
	WaitFor(t, 10*time.Second, "4 relays to share 8 partitions (2 each)", func() bool { return sharesOK(rs, n) == nil })
	hl := rs[3].Health()
	if hl.PartitionCount != n || len(hl.Partitions) != 2 || hl.Status() != "leader" || hl.Instance != "r3" {
		t.Fatalf("joined relay's health: %+v", hl)
	}
	st, err := h.Store.(outbox.Partitioned).Leases().List(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Partitions != n || len(st.Instances) != 4 || len(st.LeadersOf()["r3"]) != 2 {
		t.Fatalf("lease status: %+v", st)
	}
	stops[0]() // a relay leaves: it releases its leases, the others take them at once
	WaitFor(t, 10*time.Second, "3 relays to share again", func() bool { return sharesOK(rs[1:], n) == nil })
	if rs[0].IsLeader() || len(rs[0].Health().Partitions) != 0 {
		t.Fatalf("stopped relay still leads: %+v", rs[0].Health())
	}
	// More relays than partitions: the extra one is a standby.
	for range 6 {
		add()
	}
	WaitFor(t, 10*time.Second, "9 relays on 8 partitions", func() bool { return sharesOK(rs[1:], n) == nil })
	standby := 0
	for _, r := range rs[1:] {
		if hl := r.Health(); !r.IsLeader() && hl.Status() == "standby" && hl.Ready() {
			standby++
		}
	}
	if standby != 1 {
		t.Fatalf("%d standbys among 9 relays on 8 partitions, want 1", standby)
	}
}

func testPartLiveLease(t *testing.T, h Harness) {
	const n = 4
	setPartitions(t, h, n)
	ctx := ctxT(t)
	ls := h.Store.(outbox.Partitioned).Leases()
	ttl := 3 * time.Second
	// A "dead" relay holds partition 2 (as one SIGKILLed would; it is not
	// counted as alive, so the live relay's share is all 4 partitions and
	// it tries to take this one too).
	ok, err := ls.Acquire(ctx, "ghost", 2, ttl)
	if err != nil || !ok {
		t.Fatalf("ghost acquire: %v %v", ok, err)
	}
	acquired := time.Now()
	rec := &Recorder{}
	r := outbox.NewRelay(h.Store, rec, partCfg(t, "live"))
	StartRelay(t, r)
	sent := map[string][]string{}
	var evs []eventkit.Event
	for i := range 200 {
		e := Event(fmt.Sprint("s", i%20), i)
		evs = append(evs, e)
		sent[e.Subject] = append(sent[e.Subject], e.ID)
	}
	AddCommit(t, ctx, h, "t", evs...)
	// Until the ghost's lease expires, partition 2 is not led, and none of
	// its events is published.
	for time.Since(acquired) < ttl-500*time.Millisecond {
		if slices.Contains(r.Health().Partitions, 2) {
			t.Fatalf("partition 2 taken %v after its live lease was acquired", time.Since(acquired))
		}
		for _, p := range rec.Events() {
			if sqlutil.PartitionOf(p.Event.Subject, n) == 2 {
				t.Fatalf("event of partition 2 published while another relay's lease was live")
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	WaitFor(t, 10*time.Second, "the expired lease to be taken", func() bool { return len(r.Health().Partitions) == n })
	WaitFor(t, 10*time.Second, "all delivered", func() bool { return len(distinct(rec.Events())) == len(evs) })
	if _, err := CheckStream(eventsOf(rec.Events()), sent); err != nil {
		t.Fatal(err)
	}
}

func testPartCount(t *testing.T, h Harness) {
	setPartitions(t, h, 4)
	ps := h.Store.(outbox.PartitionSetter)
	r := outbox.NewRelay(h.Store, &Recorder{}, partCfg(t, "a"))
	stop := StartRelay(t, r)
	WaitFor(t, 10*time.Second, "the relay to lead", r.IsLeader)
	if err := ps.SetPartitions(ctxT(t), 8); !errors.Is(err, outbox.ErrRelaysRunning) {
		t.Fatalf("SetPartitions with a relay running: %v, want ErrRelaysRunning", err)
	}
	stop()
	// The stopped relay released its leases (or, if that failed under
	// load, they expire after LeaseTTL): then the count can change.
	var err error
	WaitFor(t, 5*time.Second, "the count to change after the relay stopped", func() bool {
		err = ps.SetPartitions(ctxT(t), 8)
		return err == nil
	})
	if n, err := h.Store.(outbox.Partitioned).Partitions(ctxT(t)); err != nil || n != 8 {
		t.Fatalf("partitions = %d, %v", n, err)
	}
	// Back to one partition: the relay leads the whole outbox again.
	if err := ps.SetPartitions(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	r = outbox.NewRelay(h.Store, &Recorder{}, partCfg(t, "b"))
	StartRelay(t, r)
	WaitFor(t, 10*time.Second, "the relay to lead", r.IsLeader)
	if hl := r.Health(); hl.Partitions != nil {
		t.Fatalf("unpartitioned relay reports partitions %v", hl.Partitions)
	}
	if err := ps.SetPartitions(ctxT(t), 4); !errors.Is(err, outbox.ErrRelaysRunning) {
		t.Fatalf("SetPartitions under a whole-outbox leader: %v, want ErrRelaysRunning", err)
	}
}

// testPartHandovers writes events while relays start and stop at random on
// 8 partitions; every event arrives and per-subject order of first copies
// holds.
func testPartHandovers(t *testing.T, h Harness) {
	const n, total, subjects = 8, 3000, 30
	setPartitions(t, h, n)
	ctx := ctxT(t)
	rec := &Recorder{}
	var mu sync.Mutex
	stops := map[int]func(){}
	next := 0
	start := func() {
		cfg := partCfg(t, fmt.Sprint("h", next))
		cfg.BatchSize = 20
		stops[next] = StartRelay(t, outbox.NewRelay(h.Store, rec, cfg))
		next++
	}
	for range 2 {
		start()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(100+rand.IntN(300)) * time.Millisecond):
			}
			mu.Lock()
			if len(stops) > 1 && rand.IntN(2) == 0 {
				for k, stop := range stops {
					go stop()
					delete(stops, k)
					break
				}
			} else if len(stops) < 4 {
				start()
			}
			mu.Unlock()
			if len(distinct(rec.Events())) == total {
				return
			}
		}
	}()
	sent := map[string][]string{}
	for i := 0; i < total; i += 30 {
		var evs []eventkit.Event
		for j := i; j < i+30; j++ {
			e := Event(fmt.Sprint("s", j%subjects), j)
			evs = append(evs, e)
			sent[e.Subject] = append(sent[e.Subject], e.ID)
		}
		AddCommit(t, ctx, h, "t", evs...)
		time.Sleep(5 * time.Millisecond)
	}
	WaitFor(t, 60*time.Second, "all delivered", func() bool { return len(distinct(rec.Events())) == total })
	<-done
	dups, err := CheckStream(eventsOf(rec.Events()), sent)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("handovers: %d relays started, %d events, %d duplicates", next, total, dups)
}
