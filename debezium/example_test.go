package debezium_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/debezium"
	"github.com/eventkit/eventkit/inbox/lruinbox"
)

// The record of the outbox event router documentation's example (an outbox
// table of the router's default layout, the payload a JSON string, the type
// placed as a header), decoded.
func ExampleFormat_DecodeRecord() {
	f := debezium.Format{Value: debezium.JSON, DefaultSource: "urn:orderdb"}
	rec := &kgo.Record{
		Topic:     "outbox.event.order",
		Key:       []byte("1"),
		Value:     []byte(`"{\"id\": 1, \"customerId\": 123}"`),
		Timestamp: time.UnixMilli(1556890294484),
		Headers: []kgo.RecordHeader{
			{Key: "id", Value: []byte("4d47e190-0402-4048-bc2c-89dd54343cdc")},
			{Key: "type", Value: []byte("OrderCreated")},
		},
	}
	ev, err := f.DecodeRecord(rec)
	if err != nil {
		panic(err)
	}
	fmt.Println(ev.ID, ev.Type, ev.Source, ev.Subject, ev.Time.Format(time.RFC3339Nano))
	fmt.Println(string(ev.Data))
	// Output:
	// 4d47e190-0402-4048-bc2c-89dd54343cdc OrderCreated urn:orderdb 1 2019-05-03T13:31:34.484Z
	// {"id": 1, "customerId": 123}
}

// A consumer reading what Debezium Server's NATS JetStream sink publishes
// (headers JSON-encoded), here through the in-memory broker: the copy a
// connector restart re-emits is dropped by the inbox.
func ExampleWrap() {
	mem := memorybroker.New(memorybroker.Options{})
	defer mem.Close(context.Background())
	b := debezium.Wrap(mem, debezium.Format{Headers: debezium.JSON})

	handled := make(chan string, 2)
	c, err := consumer.New(b, consumer.Config{Inbox: lruinbox.New(lruinbox.Options{}), Logger: quiet()})
	if err != nil {
		panic(err)
	}
	_ = c.Handle("acct", "billing", consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
		seq, _, _ := eventkit.SubjectSeq(ev)
		handled <- fmt.Sprintf("%s %s #%d %s", ev.Type, ev.Subject, seq, ev.Data)
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()

	headers := map[string]string{
		"id": `"e-1"`, "type": `"acct.opened"`, "source": `"urn:acct"`, "subject": `"acct-1"`,
		"time": `"2026-12-01T10:00:00Z"`, "extensions": `"{\"subjectseq\": \"1\"}"`,
	}
	for range 2 { // published twice
		_ = mem.PublishRaw(ctx, "acct", headers, []byte(`{"owner":"ada"}`))
	}
	fmt.Println(<-handled)
	for c.Stats().Duplicates == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	// Output:
	// acct.opened acct-1 #1 {"owner":"ada"}
}

// The message the outbox event router publishes for an outbox row, under
// docs/debezium.md's Kafka Connect configuration (the zero Format).
func ExampleFormat_Encode() {
	e := eventkit.Event{ID: "e-1", Type: "acct.opened", Source: "urn:acct", Subject: "acct-1",
		Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), DataContentType: "application/json",
		Data: []byte(`{"owner":"ada"}`), Extensions: map[string]string{"subjectseq": "1"}}
	m, err := debezium.Format{}.Encode(e)
	if err != nil {
		panic(err)
	}
	fmt.Printf("key %s value %s\n", m.Key, m.Value)
	for _, h := range m.Headers {
		fmt.Printf("%s=%s\n", h.Key, h.Value)
	}
	// Output:
	// key acct-1 value {"owner":"ada"}
	// id=e-1
	// type=acct.opened
	// source=urn:acct
	// subject=acct-1
	// time=2026-12-01T10:00:00Z
	// dataversion=
	// datacontenttype=application/json
	// dataschema=
	// extensions={"subjectseq":"1"}
}

// eventkit's relay standing in for Debezium: it publishes the outbox rows
// as the router would (here as Debezium Server's NATS JetStream sink, on the
// in-memory broker), and consumers read them through Wrap.
func ExamplePublisher() {
	mem := memorybroker.New(memorybroker.Options{})
	defer mem.Close(context.Background())
	f := debezium.Format{Headers: debezium.JSON}
	pub, err := debezium.Publisher(mem, f) // pass pub to outbox.NewRelay
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	got := make(chan string, 1)
	sub, err := debezium.Wrap(mem, f).Subscribe(ctx, "acct", "billing", func(ctx context.Context, d broker.Delivery) error {
		got <- fmt.Sprintf("%s %s %s", d.Event().ID, d.Event().Subject, d.Event().Data)
		return d.Ack(ctx)
	})
	if err != nil {
		panic(err)
	}
	defer sub.Close(ctx)
	ev := eventkit.New("acct.opened", "application/json", []byte(`{"owner":"ada"}`), eventkit.WithSubject("acct-1"))
	ev.ID = "e-1"
	if err := pub.Publish(ctx, "acct", ev); err != nil {
		panic(err)
	}
	fmt.Println(<-got)
	// Output:
	// e-1 acct-1 {"owner":"ada"}
}
