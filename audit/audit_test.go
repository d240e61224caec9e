package audit_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/audit"
	"github.com/eventkit/eventkit/broker/memorybroker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
	"github.com/eventkit/eventkit/outbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a fresh database with an outbox and an inbox, and a topic.
type env struct {
	t     *testing.T
	ctx   context.Context
	st    *connect.Store
	in    *sqlinbox.Inbox
	topic string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, err := connect.OpenStore(ctx, testdb.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Outbox.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sqlinbox.Migrate(ctx, st.SQL, st.Dialect); err != nil {
		t.Fatal(err)
	}
	in, err := sqlinbox.New(st.SQL, st.Dialect, sqlinbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, ctx: ctx, st: st, in: in, topic: testenv.Name("audit")}
}

// write adds n events per subject to the outbox, in one transaction each.
func (e *env) write(subjects []string, n int) {
	e.t.Helper()
	for i := 0; i < n; i++ {
		for _, s := range subjects {
			tx, err := e.st.SQL.BeginTx(e.ctx, nil)
			if err != nil {
				e.t.Fatal(err)
			}
			ev := eventkit.New("thing.happened", "application/json", []byte(fmt.Sprintf(`{"n":%d}`, i)), eventkit.WithSubject(s))
			if err := e.st.AddSQL(e.ctx, tx, e.topic, ev); err != nil {
				e.t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				e.t.Fatal(err)
			}
		}
	}
}

// relay claims every pending record, hands them to publish (which
// publishes them, maybe with faults) and completes them, as the relay does.
func (e *env) relay(publish func([]outbox.Record)) []outbox.Record {
	e.t.Helper()
	recs, err := e.st.Outbox.Claim(e.ctx, outbox.ClaimParams{Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	publish(recs)
	seqs := make([]int64, len(recs))
	for i, r := range recs {
		seqs[i] = r.Seq
	}
	if _, err := e.st.Outbox.Complete(e.ctx, seqs, false); err != nil {
		e.t.Fatal(err)
	}
	return recs
}

// apply records events as applied by group through the inbox.
func (e *env) apply(group string, recs []outbox.Record) {
	e.t.Helper()
	for _, r := range recs {
		err := e.in.Process(e.ctx, inbox.Key{Consumer: group, EventID: r.Event.ID, EventType: r.Event.Type}, func(context.Context) error { return nil })
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) audit(s audit.Stream, groups ...string) *audit.Report {
	e.t.Helper()
	rep, err := audit.Run(e.ctx, audit.Config{DB: e.st.SQL, Dialect: e.st.Dialect, Stream: s, Topic: e.topic, Groups: groups})
	if err != nil {
		e.t.Fatal(err)
	}
	return rep
}

func kinds(rep *audit.Report) map[audit.Kind]int {
	out := map[audit.Kind]int{}
	for _, f := range rep.Findings {
		out[f.Kind]++
	}
	return out
}

func natsBroker(t *testing.T) *natsbroker.Broker {
	t.Helper()
	b, err := natsbroker.Connect(context.Background(), testenv.NATS.URL(t), natsbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

func publish(t *testing.T, pub interface {
	Publish(context.Context, string, ...eventkit.Event) error
}, topic string, recs []outbox.Record) {
	t.Helper()
	for _, r := range recs {
		if err := pub.Publish(context.Background(), topic, r.Event); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNATS plants each fault in a real JetStream stream and a real inbox
// table and checks that the audit finds it and only it.
func TestNATS(t *testing.T) {
	e := newEnv(t)
	b := natsBroker(t)
	t.Cleanup(func() { _ = b.DeleteTopic(context.Background(), e.topic) })
	plantFaults(t, e, audit.NATS(b), b, func(pos uint64) error {
		st, err := b.JetStream().Stream(e.ctx, b.StreamName(e.topic))
		if err != nil {
			return err
		}
		return st.DeleteMsg(e.ctx, pos)
	})
}

// plantFaults plants each fault in s's broker (b publishes, del deletes the
// message at a position s reported) and a real inbox table and checks that
// the audit finds it and only it.
func plantFaults(t *testing.T, e *env, s audit.Stream, b interface {
	Publish(context.Context, string, ...eventkit.Event) error
}, del func(pos uint64) error) {
	t.Helper()
	subjects := []string{"a", "b", "c"}
	e.write(subjects, 4)
	recs := e.relay(func(recs []outbox.Record) { publish(t, b, e.topic, recs) })
	e.apply("billing", recs)

	rep := e.audit(s, "billing")
	if !rep.OK() || rep.AtBroker != 12 {
		t.Fatalf("clean run: %d at broker, findings %+v", rep.AtBroker, rep.Findings)
	}

	// A pending and a parked event are not missing at the broker.
	e.write([]string{"a", "b"}, 1)
	pend, err := e.st.Outbox.Claim(e.ctx, outbox.ClaimParams{Limit: 10})
	if err != nil || len(pend) != 2 {
		t.Fatalf("claim: %v %d", err, len(pend))
	}
	if err := e.st.Outbox.Fail(e.ctx, outbox.FailParams{Seq: pend[1].Seq, Reason: "too large", Park: true}); err != nil {
		t.Fatal(err)
	}
	if rep = e.audit(s, "billing"); !rep.OK() || rep.Pending != 1 || rep.Parked != 1 {
		t.Fatalf("with a pending and a parked event: pending %d parked %d findings %+v", rep.Pending, rep.Parked, rep.Findings)
	}

	// Fault 1: a message deleted at the broker (subject b, position 2).
	var victim uint64
	_ = s.Read(e.ctx, e.topic, time.Time{}, func(m audit.Message) error {
		if n, _, _ := eventkit.SubjectSeq(m.Event); m.Event.Subject == "b" && n == 2 {
			victim = m.Pos
		}
		return nil
	})
	if err := del(victim); err != nil {
		t.Fatal(err)
	}
	rep = e.audit(s, "billing")
	if k := kinds(rep); len(rep.Findings) != 1 || k[audit.MissingAtBroker] != 1 || rep.Findings[0].Subject != "b" || rep.Findings[0].Seq != 2 {
		t.Fatalf("deleted message: %+v", rep.Findings)
	}

	// Fault 2: a doubled inbox row (a table whose key was dropped).
	if _, err := e.st.SQL.ExecContext(e.ctx, `ALTER TABLE processed_events DROP CONSTRAINT processed_events_pkey`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.SQL.ExecContext(e.ctx, `INSERT INTO processed_events (consumer, event_id, event_type) VALUES ('billing', $1, 'x')`, recs[0].Event.ID); err != nil {
		t.Fatal(err)
	}
	rep = e.audit(s, "billing")
	if k := kinds(rep); k[audit.AppliedTwice] != 1 || k[audit.MissingAtBroker] != 1 || len(rep.Findings) != 2 {
		t.Fatalf("doubled inbox row: %+v", rep.Findings)
	}

	// Fault 3: a swapped pair and an event applied by no group, on a new
	// subject.
	e.write([]string{"d"}, 2)
	pair := e.relay(func(recs []outbox.Record) {
		var d []outbox.Record
		for _, r := range recs {
			if r.Event.Subject == "d" {
				d = append(d, r)
			}
		}
		publish(t, b, e.topic, []outbox.Record{d[1], d[0]})
	})
	var d []outbox.Record
	for _, r := range pair {
		if r.Event.Subject == "d" {
			d = append(d, r)
		}
	}
	e.apply("billing", d[:1])
	rep = e.audit(s, "billing")
	k := kinds(rep)
	if k[audit.OutOfOrder] != 1 || k[audit.NotApplied] != 1 {
		t.Fatalf("swapped pair: %+v", rep.Findings)
	}
	for _, f := range rep.Findings {
		if f.Kind == audit.OutOfOrder && (f.Subject != "d" || f.Seq != 1) {
			t.Fatalf("out of order finding names %s/%d, want d/1", f.Subject, f.Seq)
		}
		if f.Kind == audit.NotApplied && f.EventID != d[1].Event.ID {
			t.Fatalf("not applied names %s, want %s", f.EventID, d[1].Event.ID)
		}
	}
	// The relay above completed the pending event of subject a without
	// publishing it: lost, so missing at the broker (with b's deleted one).
	if k[audit.MissingAtBroker] != 2 {
		t.Fatalf("findings %+v", rep.Findings)
	}
}

func TestNoTopic(t *testing.T) {
	e := newEnv(t)
	b := natsBroker(t)
	_, err := audit.Run(e.ctx, audit.Config{DB: e.st.SQL, Dialect: e.st.Dialect, Stream: audit.NATS(b), Topic: e.topic})
	if !errors.Is(err, audit.ErrNoTopic) {
		t.Fatalf("got %v, want ErrNoTopic", err)
	}
	t.Log(err)
	mem := memorybroker.New(memorybroker.Options{})
	_, err = audit.Run(e.ctx, audit.Config{DB: e.st.SQL, Dialect: e.st.Dialect, Stream: audit.Memory(mem), Topic: e.topic})
	if !errors.Is(err, audit.ErrNoTopic) {
		t.Fatalf("memory: got %v, want ErrNoTopic", err)
	}
}

// TestMemory runs the broker side on the memory broker: an event the relay
// completed but never published is missing.
func TestMemory(t *testing.T) {
	e := newEnv(t)
	mem := memorybroker.New(memorybroker.Options{})
	defer mem.Close(context.Background())
	e.write([]string{"x"}, 3)
	recs := e.relay(func(recs []outbox.Record) { publish(t, mem, e.topic, []outbox.Record{recs[0], recs[2]}) })
	e.apply("g1", recs)
	rep := e.audit(audit.Memory(mem), "g1")
	if len(rep.Findings) != 1 || rep.Findings[0].Kind != audit.MissingAtBroker || rep.Findings[0].Seq != 2 {
		t.Fatalf("findings %+v", rep.Findings)
	}
}

var _ = sql.ErrNoRows
