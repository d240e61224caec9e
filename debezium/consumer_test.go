package debezium_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/eventkit/eventkit"

	"github.com/eventkit/eventkit/broker/kafkabroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/debezium"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

// routerRecord is the Kafka record the outbox event router emits for one
// eventkit outbox row under the Kafka Connect configuration of
// docs/debezium.md (the zero Format): topic = the row's topic
// (route.by.field=topic, route.topic.replacement=${routedByValue}), key =
// subject, value = data (BinaryDataConverter), headers "id" and the placed
// columns as plain strings (SimpleHeaderConverter).
func routerRecord(topic, id, subject string, seq, n int) *kgo.Record {
	h := func(k, v string) kgo.RecordHeader { return kgo.RecordHeader{Key: k, Value: []byte(v)} }
	return &kgo.Record{
		Topic: topic, Key: []byte(subject),
		Value: fmt.Appendf(nil, `{"n":%d}`, n),
		Headers: []kgo.RecordHeader{
			h("id", id), h("type", "acct.bumped"), h("source", "urn:acct"), h("subject", subject),
			h("time", time.Now().UTC().Format(time.RFC3339Nano)), h("dataversion", ""),
			h("datacontenttype", "application/json"), h("dataschema", ""),
			h("extensions", fmt.Sprintf(`{"subjectseq":%q}`, strconv.Itoa(seq))),
		},
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// consumeScenario publishes subjects*per Debezium-shaped records on kfake,
// each subject's 1st and 2nd, 4th and 5th, ... rows swapped and a third of
// them published again (a connector restart re-emits what it had not
// committed), plus one raw change event (no router) and one event that
// eventkit's own relay published, and runs two competing consumers with a
// SQLite inbox. The handler applies each subject's events with a
// compare-and-swap on a counter; it returns the order violations after
// checking every event was applied exactly once.
func consumeScenario(t *testing.T, f debezium.Format, strict bool) (violations int64, st consumer.Stats) {
	const subjects, per, group = 8, 10, "billing"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	conn := func() *kafkabroker.Broker {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := kafkabroker.New(ctx, kafkabroker.Options{
			Brokers: c.ListenAddrs(), Partitions: 4, Logger: quiet(),
			SessionTimeout: 10 * time.Second, HeartbeatInterval: 100 * time.Millisecond, RebalanceTimeout: 10 * time.Second,
			CommitInterval: 100 * time.Millisecond, FetchMaxWait: 200 * time.Millisecond, RevokeWait: 2 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = b.Close(ctx)
		})
		return b
	}
	topic := testenv.Name("acct")

	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "inbox.db")+"?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	in, err := sqlinbox.New(db, sqlinbox.SQLite, sqlinbox.Options{Table: "inbox"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := in.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE acct (id TEXT PRIMARY KEY, n INTEGER NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	for s := range subjects {
		if _, err := db.Exec("INSERT INTO acct (id, n) VALUES (?, 0)", fmt.Sprint("s", s)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec("INSERT INTO acct (id, n) VALUES ('own', 0)"); err != nil {
		t.Fatal(err)
	}

	var bad atomic.Int64
	handler := consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
		var p struct{ N int }
		if err := json.Unmarshal(ev.Data, &p); err != nil {
			return eventkit.Permanent(err)
		}
		tx, err := sqlinbox.Tx(ctx)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, "UPDATE acct SET n = n + 1 WHERE id = ? AND n = ?", ev.Subject, p.N-1)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		bad.Add(1)
		_, err = tx.ExecContext(ctx, "UPDATE acct SET n = n + 1 WHERE id = ?", ev.Subject)
		return err
	})
	var rs []*consumer.Consumer
	for range 2 {
		cfg := consumer.Config{Concurrency: 4, Inbox: in, Logger: quiet(), AckWait: 5 * time.Second,
			Retry: consumer.RetryPolicy{MaxAttempts: 5, Initial: 2 * time.Millisecond, Max: 20 * time.Millisecond}}
		if strict {
			cfg.StrictOrder = true
		} else {
			cfg.OrderedBySubject = true
		}
		cs, err := consumer.New(debezium.Wrap(conn(), f), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.Handle(topic, group, handler); err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- cs.Run(runCtx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("Run did not return")
			}
		})
		rs = append(rs, cs)
	}

	var recs []*kgo.Record
	for i := 1; i <= per; i++ {
		for s := range subjects {
			subj := fmt.Sprint("s", s)
			recs = append(recs, routerRecord(topic, fmt.Sprintf("%s-%d", subj, i), subj, i, i))
		}
	}
	for i := 0; i+1 < per; i += 3 {
		for s := range subjects {
			a, b := i*subjects+s, (i+1)*subjects+s
			recs[a], recs[b] = recs[b], recs[a]
		}
	}
	for i := 0; i < len(recs); i += 3 {
		// A duplicate is a second record with the same content: franz-go
		// owns a record until its promise, so one *kgo.Record must not be
		// produced twice in a call (it raced, and kfake saw a corrupt batch).
		r := recs[i]
		recs = append(recs, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers})
	}
	own := kafkabroker.Record(topic, eventkit.New("acct.bumped", "application/json", []byte(`{"n":1}`), eventkit.WithSubject("own")))
	raw := &kgo.Record{Topic: topic, Key: []byte(`{"seq":1}`), Value: []byte(`{"before":null,"after":{"seq":1},"op":"c"}`)}
	recs = append(recs, own, raw)
	pub := conn()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pub.PublishRecords(pctx, recs...); err != nil {
		t.Fatal(err)
	}

	total := func() int {
		var n int
		if err := db.QueryRow("SELECT coalesce(sum(n), 0) FROM acct").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	deadline := time.Now().Add(90 * time.Second)
	for total() < subjects*per+1 || stats(rs).DeadLettered < 1 || stats(rs).InFlight > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("applied %d of %d events, stats %+v", total(), subjects*per+1, stats(rs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for s := range subjects {
		var n int
		if err := db.QueryRow("SELECT n FROM acct WHERE id = ?", fmt.Sprint("s", s)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != per {
			t.Errorf("subject s%d applied %d times, want %d", s, n, per)
		}
	}
	var n int
	if err := db.QueryRow("SELECT n FROM acct WHERE id = 'own'").Scan(&n); err != nil || n != 1 {
		t.Errorf("the event of eventkit's own relay applied %d times (%v), want 1", n, err)
	}
	st = stats(rs)
	if st.DeadLettered != 1 {
		t.Errorf("dead-lettered %d, want 1 (the raw change event)", st.DeadLettered)
	}
	t.Logf("strict=%v: violations %d, stats %+v", strict, bad.Load(), st)
	return bad.Load(), st
}

func stats(cs []*consumer.Consumer) consumer.Stats {
	var s consumer.Stats
	for _, c := range cs {
		x := c.Stats()
		s.InFlight += x.InFlight
		s.Handled += x.Handled
		s.Duplicates += x.Duplicates
		s.Early += x.Early
		s.DeadLettered += x.DeadLettered
	}
	return s
}

// TestConsumeDebeziumRecordsStrictOrder: Debezium-shaped records on kfake,
// out of order within subjects and with duplicates, are applied exactly once
// and in subjectseq order by competing consumers with the SQL inbox and
// StrictOrder; the raw change event is dead-lettered.
func TestConsumeDebeziumRecordsStrictOrder(t *testing.T) {
	v, st := consumeScenario(t, debezium.Format{}, true)
	if v != 0 {
		t.Errorf("%d events applied out of subject order", v)
	}
	if st.Duplicates == 0 {
		t.Errorf("no duplicate dropped by the inbox: %+v", st)
	}
}

// TestConsumeDebeziumRecordsBestEffortOrder is the control: the same records
// under OrderedBySubject (delivery order) are applied once each, but the
// swapped rows are applied out of order, so the strict test above would
// notice a decoder that lost subjectseq.
func TestConsumeDebeziumRecordsBestEffortOrder(t *testing.T) {
	if v, _ := consumeScenario(t, debezium.Format{}, false); v == 0 {
		t.Error("no violation without StrictOrder: the scenario does not reorder")
	}
}
