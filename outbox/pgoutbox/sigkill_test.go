package pgoutbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

// childEnv starts TestRelayChild: "mode table stream-prefix", mode
// "leader" (TestSIGKILL) or "partition" (TestPartitionSIGKILL).
const childEnv = "EVENTKIT_OUTBOX_RELAY_CHILD"

const (
	killBatch    = 100 // partition relays' BatchSize
	killLeaseTTL = 2 * time.Second
)

// TestRelayChild is a relay process of the SIGKILL tests: it runs only when
// one of them starts it, and publishes to JetStream until it is killed. In
// partition mode its instance id is hostname-pid.
func TestRelayChild(t *testing.T) {
	arg := strings.Fields(os.Getenv(childEnv))
	if len(arg) != 3 {
		t.Skip("runs only as a SIGKILL test's child process")
	}
	mode, table, prefix := arg[0], arg[1], arg[2]
	nc, err := nats.Connect(testenv.NATS.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := pgoutbox.Config{Table: table}
	rcfg := outbox.RelayConfig{PollInterval: 100 * time.Millisecond, StatusInterval: -1}
	if mode == "partition" {
		rcfg.BatchSize, rcfg.LeaseTTL, rcfg.Instance = killBatch, killLeaseTTL, outbox.DefaultInstance()
	} else {
		cfg.LockCheckInterval = 100 * time.Millisecond
		rcfg.BatchSize, rcfg.LockRetryInterval = 200, 50*time.Millisecond
	}
	s, err := pgoutbox.New(newPool(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	relay := outbox.NewRelay(s, &jsPublisher{js: js, prefix: prefix}, rcfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_ = relay.Run(ctx) // until SIGKILL
}

// killRun is one SIGKILL test: a JetStream stream, a writer adding events
// to the outbox in the background, and relay processes started by
// startChild.
type killRun struct {
	t         *testing.T
	ctx       context.Context
	pool      *pgxpool.Pool
	s         *pgoutbox.Store
	mode      string
	name      string
	stream    jetstream.Stream
	sent      map[string][]string // subject -> event ids in commit order
	writeDone chan error
}

// startKillRun creates the stream and starts writing total events, perTx a
// transaction, subject(j) the subject of event j, pausing between
// transactions.
func startKillRun(ctx context.Context, t *testing.T, pool *pgxpool.Pool, s *pgoutbox.Store, mode string,
	total, perTx int, subject func(j int) string, pause time.Duration) *killRun {
	nc, err := nats.Connect(testenv.NATS.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ToUpper(testenv.Name("OUTBOXKILL"))
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	k := &killRun{t: t, ctx: ctx, pool: pool, s: s, mode: mode, name: name, stream: stream,
		sent: map[string][]string{}, writeDone: make(chan error, 1)}
	go func() { k.writeDone <- k.write(total, perTx, subject, pause) }()
	return k
}

func (k *killRun) write(total, perTx int, subject func(j int) string, pause time.Duration) error {
	for i := 0; i < total; i += perTx {
		tx, err := k.pool.Begin(k.ctx)
		if err != nil {
			return err
		}
		var evs []eventkit.Event
		for j := i; j < i+perTx; j++ {
			evs = append(evs, eventkit.New("kill.event", "text/plain", fmt.Appendf(nil, "%d", j),
				eventkit.WithSubject(subject(j))))
		}
		if err := k.s.Add(k.ctx, tx, "kill", evs...); err != nil {
			// Roll back so the connection goes back to the pool: a held
			// connection makes the pool's Close (in cleanup) wait for ever.
			_ = tx.Rollback(context.Background())
			return fmt.Errorf("writer: add at event %d: %w", i, err)
		}
		if err := tx.Commit(k.ctx); err != nil {
			return fmt.Errorf("writer: commit at event %d: %w", i, err)
		}
		for _, e := range evs {
			k.sent[e.Subject] = append(k.sent[e.Subject], e.ID)
		}
		time.Sleep(pause) // spread the stream over the kills
	}
	return nil
}

// startChild starts a relay process; kill stops it with SIGKILL.
func (k *killRun) startChild() *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestRelayChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+k.mode+" "+k.s.Table()+" "+k.name)
	if err := cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	return cmd
}

func kill(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
}

func (k *killRun) streamMsgs() uint64 {
	info, err := k.stream.Info(k.ctx)
	if err != nil {
		k.t.Fatal(err)
	}
	return info.State.Msgs
}

// wrote waits for the writer to finish.
func (k *killRun) wrote() {
	if err := <-k.writeDone; err != nil {
		k.t.Fatal(err)
	}
}

// check waits for the relays to drain the outbox,
// reads the stream back in order and checks it (outboxtest.CheckStream):
// every event there, per-subject order of first copies. It returns the
// number of duplicates.
func (k *killRun) check(drain time.Duration) (msgs, dups int) {
	t := k.t
	drainStart := time.Now()
	outboxtest.WaitFor(t, drain, "backlog drained", func() bool {
		var n int
		err := k.pool.QueryRow(k.ctx, `SELECT count(*) FROM `+pgx.Identifier{k.s.Table()}.Sanitize()).Scan(&n)
		return err == nil && n == 0
	})
	t.Logf("after the kills: drained in %v", time.Since(drainStart).Round(time.Millisecond))
	cons, err := k.stream.OrderedConsumer(k.ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	n := k.streamMsgs()
	got := make([]eventkit.Event, 0, n)
	for uint64(len(got)) < n {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			h := m.Headers()
			got = append(got, eventkit.Event{ID: h.Get("ce-id"), Subject: h.Get("ce-subject")})
		}
		if batch.Error() != nil {
			t.Fatal(batch.Error())
		}
	}
	dups, err = outboxtest.CheckStream(got, k.sent)
	if err != nil {
		t.Fatal(err)
	}
	return len(got), dups
}

// TestSIGKILL streams 10,000 events through relays running as separate
// processes that are SIGKILLed at random moments (the lock session and any
// batch in flight die with them) into NATS JetStream, then reads the stream
// back and checks that every event is there, per-subject order of first
// copies, and that duplicates stay within one batch per kill.
func TestSIGKILL(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("child")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	t.Parallel()
	const total, subjects, perTx, kills, batch = 10000, 50, 50, 5, 200
	pool := newPool(t)
	s := newStore(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := startKillRun(ctx, t, pool, s, "leader", total, perTx, func(j int) string { return fmt.Sprint("s", j%subjects) }, 2*time.Millisecond)
	for i := 1; i <= kills; i++ {
		before := k.streamMsgs()
		cmd := k.startChild()
		// Kill it at a random moment once it has started publishing.
		deadline := time.Now().Add(10 * time.Second)
		for k.streamMsgs() == before && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		kill(cmd)
		t.Logf("SIGKILL %d: %d messages in the stream", i, k.streamMsgs())
	}
	k.wrote()
	last := k.startChild()
	defer kill(last)
	msgs, dups := k.check(60 * time.Second)
	t.Logf("SIGKILL test: %d events, %d kills, %d messages in JetStream, %d duplicates (bound %d = kills x batch)",
		total, kills, msgs, dups, kills*batch)
	if dups > kills*batch {
		t.Fatalf("%d duplicates: more than one batch per kill", dups)
	}
}

// TestPartitionSIGKILL runs 4 relay processes on an outbox of 16
// partitions and SIGKILLs one at random every 0.3-1.5 s (starting a new one
// in its place) while 20,000 events over 100 subjects are written; then
// it reads the JetStream stream back: every event is there, per-subject
// order of first copies holds, and duplicates stay within the documented
// bound: for each kill, BatchSize x the partitions the killed relay led.
// EVENTKIT_PARTITION_KILL_SECONDS (default 20) sets how long the events
// are spread over.
func TestPartitionSIGKILL(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("child")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	const total, subjects, perTx, relays, partitions = 20000, 100, 50, 4, 16
	secs := 20
	if v, err := strconv.Atoi(os.Getenv("EVENTKIT_PARTITION_KILL_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	pool := newPool(t)
	s := newStore(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second+3*time.Minute)
	defer cancel()
	if err := s.SetPartitions(ctx, partitions); err != nil {
		t.Fatal(err)
	}
	k := startKillRun(ctx, t, pool, s, "partition", total, perTx, func(int) string { return fmt.Sprint("s", rand.IntN(subjects)) },
		time.Duration(secs)*time.Second/(total/perTx))

	host, _ := os.Hostname()
	ledBy := func(cmd *exec.Cmd) int {
		var n int
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM `+s.Table()+`_leases WHERE owner = $1 AND expires_at > (extract(epoch FROM clock_timestamp()) * 1000000)::bigint`,
			fmt.Sprintf("%s-%d", host, cmd.Process.Pid)).Scan(&n)
		return n
	}
	procs := make([]*exec.Cmd, relays)
	for i := range procs {
		procs[i] = k.startChild()
	}
	defer func() {
		for _, p := range procs {
			kill(p)
		}
	}()
	kills, bound := 0, 0
	var werr error
loop:
	for {
		select {
		case werr = <-k.writeDone:
			break loop
		case <-time.After(time.Duration(300+rand.IntN(1200)) * time.Millisecond):
		}
		i := rand.IntN(relays)
		led := ledBy(procs[i])
		kill(procs[i])
		kills++
		bound += led * killBatch
		procs[i] = k.startChild()
	}
	if werr != nil {
		t.Fatal(werr)
	}
	msgs, dups := k.check(2 * time.Minute)
	st, err := s.Leases().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("leaders after the drain: %v", st.LeadersOf())
	t.Logf("partition SIGKILL test: %d events over %d subjects in %ds, %d relays on %d partitions, %d kills, %d messages in JetStream, %d duplicates (bound %d = sum over kills of batch x partitions led)",
		total, subjects, secs, relays, partitions, kills, msgs, dups, bound)
	if dups > bound {
		t.Fatalf("%d duplicates: more than the bound %d", dups, bound)
	}
}
