package debezium_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/kafkabroker"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/debezium"
)

// fixtureEvent is the event a fixture decodes to.
func fixtureEvent(t *testing.T, fx fixture) eventkit.Event {
	w := fx.Want
	e := eventkit.Event{ID: w.ID, Type: w.Type, Source: w.Source, Subject: w.Subject, Time: w.Time,
		DataVersion: w.DataVersion, DataContentType: w.DataContentType, DataSchema: w.DataSchema, Extensions: w.Extensions}
	if w.Data != nil {
		e.Data = []byte(*w.Data)
	}
	return e
}

// sameSchemaJSON compares two values written by JsonConverter with schemas
// by their schema type and payload: the fixtures' schemas differ among
// themselves in the optional flag and the semantic name (io.debezium.data.Json
// for a PostgreSQL jsonb column), which no decoder reads.
func sameSchemaJSON(a, b string) bool {
	type w struct {
		Schema struct {
			Type string `json:"type"`
		} `json:"schema"`
		Payload any `json:"payload"`
	}
	var x, y w
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return a == b
	}
	return reflect.DeepEqual(x, y)
}

// TestEncodeFixtures: Encode of the event of each fixture of eventkit's
// layout with every attribute placed (docs/debezium.md's configuration)
// gives the fixture's key, value and headers, in order: byte for byte with
// raw and JSON converters, by schema type and payload with schemas.
func TestEncodeFixtures(t *testing.T) {
	n := 0
	for _, fx := range loadFixtures(t) {
		if fx.Want == nil || len(fx.Headers) != 9 || fx.Sink == "redis" ||
			!strings.HasPrefix(fx.Name, "eventkit-layout") && !strings.HasPrefix(fx.Name, "debezium-server") {
			continue
		}
		n++
		t.Run(fx.Name, func(t *testing.T) {
			m, err := fx.Format.Encode(fixtureEvent(t, fx))
			if err != nil {
				t.Fatal(err)
			}
			eq := func(a, b string) bool { return a == b }
			if fx.Format.Headers == debezium.JSONWithSchema || fx.Format.Value == debezium.JSONWithSchema {
				eq = sameSchemaJSON
			}
			if fx.Sink == "" && (fx.Key == nil || !eq(string(m.Key), *fx.Key)) {
				t.Errorf("key %q, want %v", m.Key, fx.Key)
			}
			if !eq(string(m.Value), string(fx.value(t))) {
				t.Errorf("value %q, want %q", m.Value, fx.value(t))
			}
			if len(m.Headers) != len(fx.Headers) {
				t.Fatalf("headers %v, want %v", m.Headers, fx.Headers)
			}
			for i, h := range fx.Headers {
				if m.Headers[i].Key != h[0] || !eq(m.Headers[i].Value, h[1]) {
					t.Errorf("header %d: %s=%s, want %s=%s", i, m.Headers[i].Key, m.Headers[i].Value, h[0], h[1])
				}
			}
		})
	}
	if n < 3 {
		t.Fatalf("only %d fixtures of eventkit's full layout", n)
	}
}

// encodeFormats are the Formats Encode must round-trip through Decode.
var encodeFormats = map[string]debezium.Format{
	"kafka-connect":        {},
	"json-binary":          {Key: debezium.JSON, Value: debezium.JSON, Headers: debezium.JSON, BinaryPayload: true},
	"json-schema":          {Key: debezium.JSONWithSchema, Value: debezium.JSONWithSchema, Headers: debezium.JSONWithSchema},
	"envelope-json":        {Value: debezium.JSON, Envelope: true, BinaryPayload: true, Headers: debezium.JSON},
	"envelope-json-schema": {Value: debezium.JSONWithSchema, Envelope: true, Headers: debezium.JSONWithSchema},
	"nats":                 {Headers: debezium.JSON},
	"names-and-extension":  {Names: debezium.Names{Type: "eventType", Time: "ts"}, Extensions: map[string]string{"subjectseq": "seq"}},
}

// stamped are storeEvents as the relay reads them back: subjectseq stamped.
func stamped() []eventkit.Event {
	evs := storeEvents()
	for i := range evs {
		if evs[i].Subject != "" {
			evs[i] = evs[i].Clone()
			if evs[i].Extensions == nil {
				evs[i].Extensions = map[string]string{}
			}
			evs[i].Extensions[eventkit.SubjectSeqExtension] = "7"
		}
	}
	return evs
}

func normal(e eventkit.Event) eventkit.Event {
	if len(e.Data) == 0 {
		e.Data = nil
	}
	e.Time = e.Time.UTC()
	return e
}

// TestEncodeRoundTrip: under every Format, the Kafka record and the
// headers-and-body message of Encode decode to the event, every attribute
// kept (binary data, no data, no subject, extensions).
func TestEncodeRoundTrip(t *testing.T) {
	for name, f := range encodeFormats {
		t.Run(name, func(t *testing.T) {
			for _, e := range stamped() {
				m, err := f.Encode(e)
				if err != nil {
					t.Fatalf("%s: %v", e.Type, err)
				}
				rec := &kgo.Record{Key: m.Key, Value: m.Value, Timestamp: time.Now()}
				hs := map[string]string{}
				for _, h := range m.Headers {
					rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)})
					hs[h.Key] = h.Value
				}
				got, err := f.DecodeRecord(rec)
				if err != nil {
					t.Fatalf("%s: record: %v", e.Type, err)
				}
				if !reflect.DeepEqual(normal(got), normal(e)) {
					t.Errorf("record:\n got %#v\nwant %#v", got, e)
				}
				if got, err = f.DecodeHeaders(hs, m.Value); err != nil {
					t.Fatalf("%s: headers: %v", e.Type, err)
				}
				if !reflect.DeepEqual(normal(got), normal(e)) {
					t.Errorf("headers:\n got %#v\nwant %#v", got, e)
				}
			}
		})
	}
}

// TestEncodeRejects: what Decode could not read back is an error, not a
// message that decodes to another event.
func TestEncodeRejects(t *testing.T) {
	proto := stamped()[1]
	if _, err := (debezium.Format{Value: debezium.JSON}).Encode(proto); err == nil {
		t.Error("binary data under a JSON value converter without BinaryPayload: no error")
	}
	if _, err := (debezium.Format{Envelope: true}).Encode(proto); err == nil {
		t.Error("an envelope under a raw value converter: no error")
	}
}

// TestPublisherMemory: what Publisher sends through PublishRaw is read back
// through Wrap as the events published, and is not a CloudEvent; an event
// without data fails permanently (Debezium Server's NATS sink would skip
// its null value) and is named in the PublishError with those after it.
func TestPublisherMemory(t *testing.T) {
	ctx := testCtx(t)
	mem := memorybroker.New(memorybroker.Options{})
	defer mem.Close(ctx)
	f := debezium.Format{Headers: debezium.JSON}
	p, err := debezium.Publisher(mem, f)
	if err != nil {
		t.Fatal(err)
	}
	evs := stamped()
	withData := []eventkit.Event{evs[0], evs[1], evs[3]}
	if err := p.Publish(ctx, "acct", withData...); err != nil {
		t.Fatal(err)
	}
	err = p.Publish(ctx, "acct", evs[3], evs[2], evs[0])
	var pe *broker.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != 2 || pe.Failed[0].Index != 1 || pe.Failed[0].ID != evs[2].ID ||
		!errors.Is(pe.Failed[0].Err, debezium.ErrNullValue) || !eventkit.IsPermanent(pe.Failed[0].Err) {
		t.Fatalf("event without data: %v, want a PublishError naming events 1 and 2, ErrNullValue, permanent", err)
	}
	want := append(withData, evs[3])

	raw := make(chan broker.Delivery, 8)
	sub, err := mem.Subscribe(ctx, "acct", "raw", func(ctx context.Context, d broker.Delivery) error {
		raw <- d
		return d.Ack(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctx)
	dec := make(chan eventkit.Event, 8)
	wsub, err := debezium.Wrap(mem, f).Subscribe(ctx, "acct", "dbz", func(ctx context.Context, d broker.Delivery) error {
		if err := d.DecodeErr(); err != nil {
			t.Errorf("wrapped delivery: %v", err)
		}
		dec <- d.Event()
		return d.Ack(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer wsub.Close(ctx)
	for i, e := range want {
		select {
		case d := <-raw:
			var de *eventkit.DecodeError
			if !errors.As(d.DecodeErr(), &de) || de.Headers["id"] != `"`+e.ID+`"` || !bytes.Equal(de.Raw, e.Data) {
				t.Errorf("raw message %d: %v, want a foreign (non-CloudEvents) message with header id %q and the data as body", i, d.DecodeErr(), e.ID)
			}
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		select {
		case got := <-dec:
			if !reflect.DeepEqual(normal(got), normal(e)) {
				t.Errorf("event %d:\n got %#v\nwant %#v", i, got, e)
			}
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
}

// TestPublisherUnsupported: a broker that can publish neither records nor
// raw messages is refused at construction.
func TestPublisherUnsupported(t *testing.T) {
	mem := memorybroker.New(memorybroker.Options{})
	defer mem.Close(context.Background())
	_, err := debezium.Publisher(struct{ broker.Publisher }{mem}, debezium.Format{})
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("got %v, want ErrUnsupported", err)
	}
}

// TestPublisherKafka: on kfake, what Publisher produces through the Kafka
// adapter's PublishRecords is the router's record (key = subject, header
// "id" the bare id, no CloudEvents ce_ header, the data as the value, a null
// value for an event without data) and reads back through Wrap as the
// events published, in order.
func TestPublisherKafka(t *testing.T) {
	ctx := testCtx(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := kafkabroker.New(ctx, kafkabroker.Options{Brokers: c.ListenAddrs(), Partitions: 1, Logger: quiet(), FetchMaxWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	p, err := debezium.Publisher(b, debezium.Format{})
	if err != nil {
		t.Fatal(err)
	}
	evs := stamped()
	if err := p.Publish(ctx, "acct", evs...); err != nil {
		t.Fatal(err)
	}
	got := make(chan broker.Delivery, len(evs))
	sub, err := debezium.Wrap(b, debezium.Format{}).Subscribe(ctx, "acct", "g", func(ctx context.Context, d broker.Delivery) error {
		got <- d
		return d.Ack(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	for i, e := range evs {
		var d broker.Delivery
		select {
		case d = <-got:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		if err := d.DecodeErr(); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ev := d.Event(); !reflect.DeepEqual(normal(ev), normal(e)) {
			t.Errorf("event %d:\n got %#v\nwant %#v", i, ev, e)
		}
		rec := d.(interface{ Unwrap() broker.Delivery }).Unwrap().(*kafkabroker.Delivery).Record()
		if string(rec.Key) != e.Subject || !bytes.Equal(rec.Value, e.Data) || (e.Data == nil) != (rec.Value == nil) {
			t.Errorf("record %d: key %q value %q, want the subject %q and the data %q", i, rec.Key, rec.Value, e.Subject, e.Data)
		}
		if len(rec.Headers) == 0 || rec.Headers[0].Key != "id" || string(rec.Headers[0].Value) != e.ID {
			t.Errorf("record %d: headers %v, want id %s first", i, rec.Headers, e.ID)
		}
		for _, h := range rec.Headers {
			if strings.HasPrefix(h.Key, "ce_") || strings.HasPrefix(h.Key, "ce-") {
				t.Errorf("record %d has the CloudEvents header %s", i, h.Key)
			}
		}
	}
}

// FuzzEncode: for any valid event, under every Format of encodeFormats,
// Encode either fails or writes what Decode reads back as the same event.
func FuzzEncode(f *testing.F) {
	f.Add("e-1", "acct.opened", "urn:acct", "acct-1", "2", "application/json", "", `{"n":1}`, "subjectseq", "1", int64(1764583200123456789))
	f.Add("01J9", "t", "s", "", "", "", "https://x/y", "\x00\xff", "traceparent", "00-a-b-01", int64(0))
	f.Fuzz(func(t *testing.T, id, typ, src, subj, dv, dct, ds, data, extK, extV string, ns int64) {
		e := eventkit.Event{ID: id, Type: typ, Source: src, Subject: subj, DataVersion: dv, DataContentType: dct,
			DataSchema: ds, Time: time.Unix(0, ns).UTC()}
		if data != "" {
			e.Data = []byte(data)
		}
		if extK != "" {
			e.Extensions = map[string]string{extK: extV}
		}
		if e.Validate(1<<20) != nil {
			return
		}
		if _, _, err := eventkit.SubjectSeq(e); err != nil {
			return
		}
		for name, fm := range encodeFormats {
			m, err := fm.Encode(e)
			if err != nil {
				continue
			}
			rec := &kgo.Record{Key: m.Key, Value: m.Value}
			for _, h := range m.Headers {
				rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)})
			}
			got, err := fm.DecodeRecord(rec)
			if err != nil {
				t.Fatalf("%s: %#v encodes to what Decode rejects: %v", name, e, err)
			}
			if !reflect.DeepEqual(normal(got), normal(e)) {
				t.Fatalf("%s:\n got %#v\nwant %#v", name, got, e)
			}
		}
	})
}
