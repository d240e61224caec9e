package pgoutbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
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

const childEnv = "EVENTKIT_OUTBOX_RELAY_CHILD" // "table stream-prefix"

// TestRelayChild is the relay process of TestSIGKILL: it runs only when the
// parent test starts it, and publishes to JetStream until it is killed.
func TestRelayChild(t *testing.T) {
	arg := os.Getenv(childEnv)
	if arg == "" {
		t.Skip("runs only as TestSIGKILL's child process")
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
	pool := newPool(t)
	s, err := pgoutbox.New(pool, pgoutbox.Config{Table: table, LockCheckInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	relay := outbox.NewRelay(s, &jsPublisher{js: js, prefix: prefix}, outbox.RelayConfig{
		BatchSize: 200, PollInterval: 100 * time.Millisecond, LockRetryInterval: 50 * time.Millisecond, StatusInterval: -1,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_ = relay.Run(ctx) // until SIGKILL
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
	natsURL := testenv.NATS.URL(t)
	pool := newPool(t)
	s := newStore(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ToUpper(testenv.Name("OUTBOXKILL"))
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = js.DeleteStream(context.Background(), name) }()

	// Write the events in the background, with the relays running.
	sent := map[string][]string{}
	writeDone := make(chan error, 1)
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
					eventkit.WithSubject(fmt.Sprint("s", j%subjects))))
			}
			if err := s.Add(ctx, tx, "kill", evs...); err != nil {
				writeDone <- err
				return
			}
			if err := tx.Commit(ctx); err != nil {
				writeDone <- err
				return
			}
			for _, e := range evs {
				sent[e.Subject] = append(sent[e.Subject], e.ID)
			}
			time.Sleep(2 * time.Millisecond) // spread the stream over the kills
		}
		writeDone <- nil
	}()

	startChild := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestRelayChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"="+s.Table()+" "+name)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	streamMsgs := func() uint64 {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	for k := 1; k <= kills; k++ {
		before := streamMsgs()
		cmd := startChild()
		// Kill it at a random moment once it has started publishing.
		deadline := time.Now().Add(10 * time.Second)
		for streamMsgs() == before && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		t.Logf("SIGKILL %d: %d messages in the stream", k, streamMsgs())
	}
	if err := <-writeDone; err != nil {
		t.Fatal(err)
	}
	last := startChild()
	defer func() {
		_ = last.Process.Signal(syscall.SIGKILL)
		_ = last.Wait()
	}()
	outboxtest.WaitFor(t, 60*time.Second, "backlog drained", func() bool {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{s.Table()}.Sanitize()).Scan(&n)
		return err == nil && n == 0
	})

	// Read the whole stream back in order.
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	n := streamMsgs()
	got := make([]eventkit.Event, 0, n)
	for uint64(len(got)) < n {
		batchMsgs, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batchMsgs.Messages() {
			h := m.Headers()
			got = append(got, eventkit.Event{ID: h.Get("ce-id"), Subject: h.Get("ce-subject")})
		}
		if batchMsgs.Error() != nil {
			t.Fatal(batchMsgs.Error())
		}
	}
	dups, err := outboxtest.CheckStream(got, sent)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILL test: %d events, %d kills, %d messages in JetStream, %d duplicates (bound %d = kills x batch)",
		total, kills, len(got), dups, kills*batch)
	if dups > kills*batch {
		t.Fatalf("%d duplicates: more than one batch per kill", dups)
	}
}
