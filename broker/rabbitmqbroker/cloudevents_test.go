package rabbitmqbroker_test

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
)

// A foreign producer writing the released AMQP binding (prefix
// "cloudEvents:") with native AMQP types (the time as a timestamp, boolean
// and integer extensions) through the real server: the subscriber reads
// every attribute, as the binding's "consumers MUST accept native types"
// requires.
func TestForeignAMQPProducerNativeTypes(t *testing.T) {
	t.Parallel()
	topic := provisionedTopic(t, rabbitmqbroker.Options{}, "g")
	b := newBroker(t, rabbitmqbroker.Options{})
	ctx := ctxT(t, 30*time.Second)
	got, h := collect(nil)
	if _, err := b.Subscribe(ctx, topic, "g", h); err != nil {
		t.Fatal(err)
	}

	ch := amqpChannel(t)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC) // AMQP 0-9-1 timestamps have second precision
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, rabbitmqbroker.ExchangeName(topic), "x", true, false, amqp.Publishing{
		ContentType: "application/json",
		Headers: amqp.Table{
			"cloudEvents:specversion": "1.0", "cloudEvents:id": "foreign-1", "cloudEvents:source": "/other",
			"cloudEvents:type": "thing.done", "cloudEvents:subject": "Grüße", "cloudEvents:time": ts,
			"cloudEvents:urgent": true, "cloudEvents:retries": int32(3), "cloudEvents_legacy": "underscore",
		},
		Body: []byte(`{"ok":true}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		t.Fatalf("publish not confirmed: %v", err)
	}
	r := next(t, got, 15*time.Second)
	e := r.d.Event()
	if err := r.d.DecodeErr(); err != nil {
		t.Fatalf("undecodable: %v", err)
	}
	if e.ID != "foreign-1" || e.Source != "/other" || e.Type != "thing.done" || e.Subject != "Grüße" ||
		!e.Time.Equal(ts) || e.DataContentType != "application/json" || string(e.Data) != `{"ok":true}` {
		t.Fatalf("decoded %+v", e)
	}
	if e.Extensions["urgent"] != "true" || e.Extensions["retries"] != "3" || e.Extensions["legacy"] != "underscore" {
		t.Fatalf("extensions %q", e.Extensions)
	}
}
