package pgcdc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgcdc"
)

// producer inserts n events in transactions of 1-maxTx events, over the
// given subjects, and records the per-subject order in which they were
// committed (each producer commits sequentially, on its own subjects).
type producer struct {
	mu   sync.Mutex
	sent map[string][]string
}

func (p *producer) run(t *testing.T, e *env, n, maxTx int, subjects []string, rnd *rand.Rand) error {
	ctx := context.Background()
	for done := 0; done < n; {
		k := min(1+rnd.IntN(maxTx), n-done)
		evs := make([]eventkit.Event, k)
		for i := range evs {
			evs[i] = ev(subjects[rnd.IntN(len(subjects))], done+i)
		}
		tx, err := e.pool.Begin(ctx)
		if err != nil {
			return err
		}
		if err := e.store.Add(ctx, tx, "crash", evs...); err != nil {
			_ = tx.Rollback(ctx)
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		p.mu.Lock()
		for _, x := range evs {
			p.sent[x.Subject] = append(p.sent[x.Subject], x.ID)
		}
		p.mu.Unlock()
		done += k
	}
	return nil
}

func (e *env) killWalsender(slot string) {
	_, _ = e.pool.Exec(context.Background(),
		`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
}

// TestCrashRestart streams 10,000 events while the relay is killed
// (its context cancelled, sometimes together with its replication
// connection) at random points, and restarted as a new process would be.
// Every event must reach the broker, each subject in commit order; the
// duplicates are counted and reported.
func TestCrashRestart(t *testing.T) {
	const total = 10000
	e := newEnv(t)
	mem := memorybroker.New(memorybroker.Options{})
	t.Cleanup(func() { _ = mem.Close(context.Background()) })
	rec := &outboxtest.Recorder{Next: mem}
	slot := e.slot

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 1))
	p := &producer{sent: map[string][]string{}}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for w := range 2 {
		subjects := make([]string, 8)
		for i := range subjects {
			subjects[i] = fmt.Sprintf("w%d-s%d", w, i)
		}
		r := rand.New(rand.NewPCG(seed, uint64(w)+2))
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- p.run(t, e, total/2, 40, subjects, r)
		}()
	}
	produced := make(chan struct{})
	go func() { wg.Wait(); close(produced) }()

	// While the relay is killed, the broker is slow (20 ms a call, as a
	// remote one might be), so that transactions wait in the relay between
	// being received and being confirmed.
	rec.SetFail(func(string, []eventkit.Event) error {
		time.Sleep(20 * time.Millisecond)
		return nil
	})
	kills := 0
	isProduced := func() bool {
		select {
		case <-produced:
			return true
		default:
			return false
		}
	}
	// Kill at least 6 times, and keep killing while the producers run.
	for kills < 6 || (!isProduced() && kills < 30) {
		r := e.relay(rec, func(c *pgcdc.Config) { c.BatchSize = 100 })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		// Kill mid-stream: once it streams, at a random point.
		deadline := time.Now().Add(10 * time.Second)
		for !r.Stats().Streaming && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(50+rnd.IntN(500)) * time.Millisecond)
		hard := rnd.IntN(2) == 0
		if hard {
			// A hard crash: the connection dies first, so the relay cannot
			// report what it confirmed last (the publisher may even go on
			// for a moment, as a dying process might).
			e.killWalsender(slot)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		kills++
		st := r.Stats()
		t.Logf("kill %d (hard %v): %d transactions received, %d events delivered", kills, hard, st.Transactions, st.Delivered)
	}
	<-produced
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d distinct events published before the final restart", distinct(rec.Events()))
	rec.SetFail(nil)
	final := e.relay(rec)
	start(t, final)
	testenv.WaitFor(t, 40*time.Second, "every event", func() bool { return distinct(rec.Events()) >= total })
	testenv.WaitFor(t, 10*time.Second, "rows deleted", func() bool { return e.rows() == 0 })

	got, dups := checkStream(t, rec, p.sent)
	t.Logf("%d events, %d kills, %d published, %d duplicates (%.1f%%)", total, kills, len(got), dups, 100*float64(dups)/total)
	if len(got) != total+dups {
		t.Fatalf("published %d, want %d + %d duplicates", len(got), total, dups)
	}
}

// checkStream checks what rec received against sent (subject -> the ids
// in commit order) with outboxtest.CheckStream, and returns the events
// received and the duplicates among them.
func checkStream(t *testing.T, rec *outboxtest.Recorder, sent map[string][]string) ([]eventkit.Event, int) {
	t.Helper()
	ps := rec.Events()
	got := make([]eventkit.Event, 0, len(ps))
	for _, x := range ps {
		got = append(got, x.Event)
	}
	dups, err := outboxtest.CheckStream(got, sent)
	if err != nil {
		t.Fatal(err)
	}
	return got, dups
}

func distinct(ps []outboxtest.Published) int {
	seen := make(map[string]struct{}, len(ps))
	for _, p := range ps {
		seen[p.Event.ID] = struct{}{}
	}
	return len(seen)
}

// TestWalsenderTerminated kills the relay's replication connection on the
// server side (as a Postgres restart or a network cut would) while events
// stream: the relay reconnects and loses nothing.
func TestWalsenderTerminated(t *testing.T) {
	const total = 3000
	e := newEnv(t)
	rec := &outboxtest.Recorder{}
	r := e.relay(rec)
	start(t, r)
	slot := e.slot
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	p := &producer{sent: map[string][]string{}}
	errc := make(chan error, 1)
	prnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 8))
	go func() { errc <- p.run(t, e, total, 20, []string{"a", "b", "c"}, prnd) }()
	for range 5 {
		testenv.WaitFor(t, 10*time.Second, "streaming", func() bool { return r.Stats().Streaming })
		time.Sleep(time.Duration(50+rnd.IntN(150)) * time.Millisecond)
		e.killWalsender(slot)
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "every event", func() bool { return distinct(rec.Events()) >= total })
	_, dups := checkStream(t, rec, p.sent)
	if s := r.Stats(); s.Reconnects < 1 {
		t.Fatalf("no reconnects recorded: %+v", s)
	}
	t.Logf("%d events, %d reconnects, %d duplicates", total, r.Stats().Reconnects, dups)
}

// TestPostgresRestart restarts the whole server mid-stream. It disturbs
// every other test using the server, so it runs only when
// EVENTKIT_TEST_PG_RESTART=1, with EVENTKIT_TEST_PG_RESTART_CMD the command
// that restarts the server (scripts/test.sh gives it a private instance of
// its own: scripts/pgtemp.sh).
func TestPostgresRestart(t *testing.T) {
	if os.Getenv("EVENTKIT_TEST_PG_RESTART") != "1" {
		t.Skip("set EVENTKIT_TEST_PG_RESTART=1 to restart PostgreSQL during this test")
	}
	const total = 2000
	e := newEnv(t)
	rec := &outboxtest.Recorder{}
	r := e.relay(rec)
	start(t, r)
	p := &producer{sent: map[string][]string{}}
	rnd := rand.New(rand.NewPCG(1, 2))
	if err := p.run(t, e, total/2, 20, []string{"a", "b"}, rnd); err != nil {
		t.Fatal(err)
	}
	restart := os.Getenv("EVENTKIT_TEST_PG_RESTART_CMD")
	if restart == "" {
		t.Fatal("set EVENTKIT_TEST_PG_RESTART_CMD to the command that restarts the server EVENTKIT_POSTGRES_URL names (scripts/test.sh runs a private instance for this)")
	}
	out, err := exec.Command("sh", "-c", restart).CombinedOutput()
	if err != nil {
		t.Fatalf("restart: %v: %s", err, out)
	}
	e.pool.Reset() // drop the pool's dead connections
	testenv.WaitFor(t, 30*time.Second, "database back", func() bool {
		return e.pool.Ping(context.Background()) == nil
	})
	if err := p.run(t, e, total/2, 20, []string{"a", "b"}, rnd); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 60*time.Second, "every event", func() bool { return distinct(rec.Events()) >= total })
	_, dups := checkStream(t, rec, p.sent)
	t.Logf("%d events across a server restart, %d duplicates", total, dups)
}
