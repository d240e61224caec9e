package debezium_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/debezium"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
	"github.com/eventkit/eventkit/outbox/mysqloutbox"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

// docsConnectorConfig is the Kafka Connect configuration of
// docs/debezium.md (its first json block), so that the tests below check the
// configuration users paste.
func docsConnectorConfig(t *testing.T) map[string]string {
	b, err := os.ReadFile("../docs/debezium.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := bytes.Cut(b, []byte("```json\n"))
	block, _, ok2 := bytes.Cut(rest, []byte("```"))
	if !ok || !ok2 {
		t.Fatal("docs/debezium.md has no json block")
	}
	var c struct{ Config map[string]string }
	if err := json.Unmarshal(block, &c); err != nil {
		t.Fatalf("docs/debezium.md connector config: %v", err)
	}
	return c.Config
}

// route is the outbox event router's mapping as configured in docs/debezium.md.
type route struct {
	id, key, payload, routeBy, replacement string
	placements                             [][2]string // column, header alias
}

func docsRoute(t *testing.T) route {
	c := docsConnectorConfig(t)
	p := "transforms.outbox."
	r := route{id: c[p+"table.field.event.id"], key: c[p+"table.field.event.key"], payload: c[p+"table.field.event.payload"],
		routeBy: c[p+"route.by.field"], replacement: c[p+"route.topic.replacement"]}
	for _, pl := range strings.Split(c[p+"table.fields.additional.placement"], ",") {
		parts := strings.Split(pl, ":")
		if len(parts) != 3 || parts[1] != "header" {
			t.Fatalf("placement %q: want column:header:alias", pl)
		}
		r.placements = append(r.placements, [2]string{parts[0], parts[2]})
	}
	if c["value.converter"] != "io.debezium.converters.BinaryDataConverter" ||
		c["key.converter"] != "org.apache.kafka.connect.storage.StringConverter" ||
		c["header.converter"] != "org.apache.kafka.connect.storage.SimpleHeaderConverter" {
		t.Fatalf("docs/debezium.md converters are not those of the zero Format: %v", c)
	}
	return r
}

// records plays the router on the rows of an eventkit outbox table: for
// each row, in insert order, the record the router emits under r, with
// every column in its text form (what pgoutput and the binlog give
// Debezium: jsonb as its text, bytea/LONGBLOB as bytes, NULL as a null
// header).
func (r route) records(t *testing.T, db *sql.DB, table string) []*kgo.Record {
	cols := []string{r.id, r.key, r.payload, r.routeBy}
	for _, p := range r.placements {
		cols = append(cols, p[0])
	}
	rows, err := db.Query("SELECT " + strings.Join(cols, ", ") + " FROM " + table + " ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var recs []*kgo.Record
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		cp := func(b sql.RawBytes) []byte {
			if b == nil {
				return nil
			}
			return append([]byte{}, b...)
		}
		rec := &kgo.Record{
			Topic: strings.ReplaceAll(r.replacement, "${routedByValue}", string(vals[3])),
			Key:   cp(vals[1]), Value: cp(vals[2]), Timestamp: time.Now(),
			Headers: []kgo.RecordHeader{{Key: "id", Value: cp(vals[0])}},
		}
		for i, p := range r.placements {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: p[1], Value: cp(vals[4+i])})
		}
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

// storeEvents are events that exercise every column: extensions, nil and
// binary data, no subject, every optional attribute.
func storeEvents() []eventkit.Event {
	full := eventkit.New("acct.opened", "application/json", []byte(`{"n":1}`),
		eventkit.WithSubject("acct-1"), eventkit.WithExtension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
	full.DataVersion, full.DataSchema = "2", "https://example.com/acct.json"
	proto := eventkit.New("acct.snapshot", "application/protobuf", []byte{0x08, 0x96, 0x01, 0xff, 0x00}, eventkit.WithSubject("acct-1"))
	empty := eventkit.New("acct.closed", "", nil, eventkit.WithSubject("acct-2"))
	nosubj := eventkit.New("acct.audit", "text/plain", []byte("hello, world"))
	for _, e := range []*eventkit.Event{&full, &proto, &empty, &nosubj} {
		e.Source = "urn:acct"
	}
	return []eventkit.Event{full, proto, empty, nosubj}
}

// checkRoundTrip decodes the router's records of the rows the store wrote
// and wants back each event the producer added, with the subjectseq the
// store stamped, on the producer's topic.
func checkRoundTrip(t *testing.T, recs []*kgo.Record, topic string, evs []eventkit.Event) {
	t.Helper()
	if len(recs) != len(evs) {
		t.Fatalf("%d rows, want %d", len(recs), len(evs))
	}
	seqs := map[string]int{}
	for i, rec := range recs {
		got, err := debezium.Format{}.DecodeRecord(rec)
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		if rec.Topic != topic {
			t.Errorf("row %d routed to %q, want %q", i, rec.Topic, topic)
		}
		want := evs[i]
		ext := map[string]string{}
		if want.Subject != "" { // the store numbers the events of a subject
			seqs[want.Subject]++
			ext[eventkit.SubjectSeqExtension] = strconv.Itoa(seqs[want.Subject])
		}
		for k, v := range want.Extensions {
			ext[k] = v
		}
		if len(ext) == 0 {
			ext = nil
		}
		want.Extensions = ext
		if !got.Time.Equal(want.Time) {
			t.Errorf("row %d time %v, want %v", i, got.Time, want.Time)
		}
		got.Time = want.Time
		if len(want.Data) == 0 {
			want.Data = nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("row %d:\n got %#v\nwant %#v", i, got, want)
		}
		checkEncode(t, i, rec, want)
	}
}

// checkEncode: debezium.Format{}.Encode of the event gives the record the
// router emits for its row (key, value, headers in order), the extensions
// header compared as JSON (PostgreSQL's jsonb text has its own spacing).
func checkEncode(t *testing.T, row int, rec *kgo.Record, e eventkit.Event) {
	t.Helper()
	m, err := debezium.Format{}.Encode(e)
	if err != nil {
		t.Fatalf("row %d: Encode: %v", row, err)
	}
	if !bytes.Equal(m.Key, rec.Key) || !bytes.Equal(m.Value, rec.Value) {
		t.Errorf("row %d: Encode key %q value %q, the router's %q %q", row, m.Key, m.Value, rec.Key, rec.Value)
	}
	if len(m.Headers) != len(rec.Headers) {
		t.Fatalf("row %d: Encode headers %v, the router's %v", row, m.Headers, rec.Headers)
	}
	for j, h := range rec.Headers {
		same := m.Headers[j].Key == h.Key && m.Headers[j].Value == string(h.Value)
		if h.Key == "extensions" && len(h.Value) > 0 {
			var a, b map[string]string
			same = json.Unmarshal(h.Value, &a) == nil && json.Unmarshal([]byte(m.Headers[j].Value), &b) == nil && reflect.DeepEqual(a, b)
		}
		if !same {
			t.Errorf("row %d: Encode header %s=%q, the router's %s=%q", row, m.Headers[j].Key, m.Headers[j].Value, h.Key, h.Value)
		}
	}
}

// TestPostgresStoreRowsDecode: the rows outbox/pgoutbox writes, routed as
// docs/debezium.md configures the router, decode to the events added.
func TestPostgresStoreRowsDecode(t *testing.T) {
	url := testdb.Postgres(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	table := testenv.Name("dbz_outbox")
	st, err := pgoutbox.New(pool, pgoutbox.Config{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	evs := storeEvents()
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return st.Add(ctx, tx, "acct", evs...) }); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := docsRoute(t)
	// extensions is jsonb: Debezium reads its text form (io.debezium.data.Json).
	for i, p := range r.placements {
		if p[0] == "extensions" {
			r.placements[i][0] = "extensions::text"
		}
	}
	checkRoundTrip(t, r.records(t, db, table), "acct", evs)
}

// TestMySQLStoreRowsDecode is TestPostgresStoreRowsDecode for outbox/mysqloutbox
// (MEDIUMTEXT extensions, LONGBLOB data).
func TestMySQLStoreRowsDecode(t *testing.T) {
	db, err := sql.Open("mysql", testdb.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	table := testenv.Name("dbz_outbox")
	st, err := mysqloutbox.New(db, mysqloutbox.Config{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	evs := storeEvents()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Add(ctx, tx, "acct", evs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	checkRoundTrip(t, docsRoute(t).records(t, db, table), "acct", evs)
}
