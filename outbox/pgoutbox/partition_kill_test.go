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
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

const partChildEnv = "EVENTKIT_OUTBOX_PART_CHILD" // "table stream-prefix"

const (
	killBatch    = 100
	killLeaseTTL = 2 * time.Second
)

// TestPartitionRelayChild is a relay process of TestPartitionSIGKILL: it
// runs only when that test starts it, with instance id hostname-pid.
func TestPartitionRelayChild(t *testing.T) {
	arg := os.Getenv(partChildEnv)
	if arg == "" {
		t.Skip("runs only as TestPartitionSIGKILL's child process")
	}
	table, prefix, _ := strings.Cut(arg, " ")
	nc, err := nats.Connect(testenv.NATS.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pgoutbox.New(newPool(t), pgoutbox.Config{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	relay := outbox.NewRelay(s, &jsPublisher{js: js, prefix: prefix}, outbox.RelayConfig{
		BatchSize: killBatch, PollInterval: 100 * time.Millisecond, LeaseTTL: killLeaseTTL, StatusInterval: -1,
		Instance: outbox.DefaultInstance(),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_ = relay.Run(ctx) // until SIGKILL
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
	if os.Getenv(partChildEnv) != "" || os.Getenv(childEnv) != "" {
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
	natsURL := testenv.NATS.URL(t)
	pool := newPool(t)
	s := newStore(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second+3*time.Minute)
	defer cancel()
	if err := s.SetPartitions(ctx, partitions); err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ToUpper(testenv.Name("PARTKILL"))
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = js.DeleteStream(context.Background(), name) }()

	sent := map[string][]string{}
	writeDone := make(chan error, 1)
	pause := time.Duration(secs) * time.Second / (total / perTx)
	go func() {
		for i := 0; i < total; i += perTx {
			tx, err := pool.Begin(ctx)
			if err != nil {
				writeDone <- err
				return
			}
			var evs []eventkit.Event
			for j := i; j < i+perTx; j++ {
				evs = append(evs, eventkit.New("kill.event", "text/plain", fmt.Appendf(nil, "%d", j),
					eventkit.WithSubject(fmt.Sprint("s", rand.IntN(subjects)))))
			}
			if err := s.Add(ctx, tx, "kill", evs...); err != nil {
				// Roll back so the connection goes back to the pool: a held
				// connection makes the pool's Close (in cleanup) wait for ever.
				_ = tx.Rollback(context.Background())
				writeDone <- fmt.Errorf("writer: add at event %d: %w", i, err)
				return
			}
			if err := tx.Commit(ctx); err != nil {
				writeDone <- fmt.Errorf("writer: commit at event %d: %w", i, err)
				return
			}
			for _, e := range evs {
				sent[e.Subject] = append(sent[e.Subject], e.ID)
			}
			time.Sleep(pause)
		}
		writeDone <- nil
	}()

	host, _ := os.Hostname()
	startChild := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestPartitionRelayChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), partChildEnv+"="+s.Table()+" "+name)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	ledBy := func(cmd *exec.Cmd) int {
		var n int
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM `+s.Table()+`_leases WHERE owner = $1 AND expires_at > (extract(epoch FROM clock_timestamp()) * 1000000)::bigint`,
			fmt.Sprintf("%s-%d", host, cmd.Process.Pid)).Scan(&n)
		return n
	}
	procs := make([]*exec.Cmd, relays)
	for i := range procs {
		procs[i] = startChild()
	}
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGKILL)
			_ = p.Wait()
		}
	}()
	kills, bound := 0, 0
	var werr error
kill:
	for {
		select {
		case werr = <-writeDone:
			break kill
		case <-time.After(time.Duration(300+rand.IntN(1200)) * time.Millisecond):
		}
		i := rand.IntN(relays)
		led := ledBy(procs[i])
		_ = procs[i].Process.Signal(syscall.SIGKILL)
		_ = procs[i].Wait()
		kills++
		bound += led * killBatch
		procs[i] = startChild()
	}
	if werr != nil {
		t.Fatal(werr)
	}
	drainStart := time.Now()
	outboxtest.WaitFor(t, 2*time.Minute, "backlog drained", func() bool {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{s.Table()}.Sanitize()).Scan(&n)
		return err == nil && n == 0
	})
	st, err := s.Leases().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the kills: drained in %v; leaders %v", time.Since(drainStart).Round(time.Millisecond), st.LeadersOf())

	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := info.State.Msgs
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]eventkit.Event, 0, n)
	for uint64(len(got)) < n {
		msgs, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range msgs.Messages() {
			h := m.Headers()
			got = append(got, eventkit.Event{ID: h.Get("ce-id"), Subject: h.Get("ce-subject")})
		}
		if msgs.Error() != nil {
			t.Fatal(msgs.Error())
		}
	}
	dups, err := outboxtest.CheckStream(got, sent)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("partition SIGKILL test: %d events over %d subjects in %ds, %d relays on %d partitions, %d kills, %d messages in JetStream, %d duplicates (bound %d = sum over kills of batch x partitions led)",
		total, subjects, secs, relays, partitions, kills, len(got), dups, bound)
	if dups > bound {
		t.Fatalf("%d duplicates: more than the bound %d", dups, bound)
	}
}
