package rabbitmqbroker

import (
	"bytes"
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	ev := eventkit.New("order.created", "application/json", []byte(`{"a":1}`),
		eventkit.WithSubject("o-1"), eventkit.WithExtension("traceparent", "00-abc-def-01"))
	msg := encode(&ev)
	if msg.MessageId != ev.ID || msg.DeliveryMode != amqp.Persistent || msg.ContentType != "application/json" {
		t.Fatalf("properties: %+v", msg)
	}
	d := amqp.Delivery{Headers: msg.Headers, ContentType: msg.ContentType, Body: msg.Body}
	got, err := decode(&d)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ev.ID || got.Subject != "o-1" || got.Extension("traceparent") != "00-abc-def-01" || !got.Time.Equal(ev.Time) {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestAttemptOf(t *testing.T) {
	for _, c := range []struct {
		h           amqp.Table
		redelivered bool
		want        int
	}{
		{nil, false, 1},
		{nil, true, 2}, // classic queue, requeued
		{amqp.Table{"x-delivery-count": int64(2)}, true, 3}, // quorum, requeued twice
		{amqp.Table{AttemptHeader: int32(4)}, false, 4},     // re-published for retry
		{amqp.Table{AttemptHeader: int32(4), "x-delivery-count": int64(1)}, true, 5},
		{amqp.Table{AttemptHeader: "junk", "x-delivery-count": -3}, false, 1},
	} {
		d := amqp.Delivery{Headers: c.h, Redelivered: c.redelivered}
		if got := attemptOf(&d); got != c.want {
			t.Errorf("attemptOf(%v, redelivered=%v) = %d, want %d", c.h, c.redelivered, got, c.want)
		}
	}
}

func TestRoutingKey(t *testing.T) {
	long := string(bytes.Repeat([]byte("é"), 200)) // 400 bytes
	k := routingKey(long)
	if len(k) > 255 || len(k) < 250 {
		t.Fatalf("routing key of %d bytes", len(k))
	}
}

// FuzzDecode feeds arbitrary bodies and headers to the delivery decoder: it
// must never panic, and a failure must be a *eventkit.DecodeError keeping
// the body.
func FuzzDecode(f *testing.F) {
	ev := eventkit.New("order.created", "application/json", []byte(`{"a":1}`), eventkit.WithSubject("o-1"))
	msg := encode(&ev)
	f.Add(msg.Body, msg.ContentType, "cloudEvents_specversion", "1.0", "cloudEvents_id", ev.ID, int64(0), false)
	f.Add([]byte("\x00\xff"), "", "cloudEvents_time", "not a time", "x-other", "1", int64(3), true)
	f.Fuzz(func(t *testing.T, body []byte, ctype, k1, v1, k2, v2 string, n int64, redelivered bool) {
		h := amqp.Table{}
		for k, v := range msg.Headers {
			h[k] = v
		}
		h[k1] = v1
		h[k2] = []byte(v2)
		h["x-delivery-count"] = n
		h[AttemptHeader] = int32(n)
		h["cloudEvents_n"] = n
		d := amqp.Delivery{Headers: h, ContentType: ctype, Body: body, Redelivered: redelivered, Timestamp: time.Unix(n, 0)}
		got, err := decode(&d)
		if err != nil {
			var de *eventkit.DecodeError
			if !errors.As(err, &de) || !errors.Is(err, eventkit.ErrDecode) || !bytes.Equal(de.Raw, body) {
				t.Fatalf("decode error %T %v does not keep the body", err, err)
			}
		} else if !bytes.Equal(got.Data, body) {
			t.Fatal("decoded data differs from the body")
		}
		if a := attemptOf(&d); a < 1 {
			t.Fatalf("attempt %d", a)
		}
		_ = (&delivery{m: d, attempt: attemptOf(&d)}).republishing()
	})
}
