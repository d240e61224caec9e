package kafkabroker_test

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/kafkabroker"
)

// BenchmarkDecodeRecord decodes a record as the Kafka adapter publishes a
// typical 1 KB event (ce_ headers, content-type, a traceparent extension).
func BenchmarkDecodeRecord(b *testing.B) {
	e := eventkit.Event{ID: "0197f3c1-8e0a-7c4e-9d2b-5a6f7e8d9c0b", Type: "order.placed", Source: "/orders",
		Subject: "order-17", Time: time.Date(2026, 12, 3, 13, 4, 5, 123456789, time.UTC), DataVersion: "1",
		DataContentType: "application/json", Extensions: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		Data: make([]byte, 1024)}
	rec := &kgo.Record{Value: e.Data}
	eventkit.KafkaBinding.Headers(e, func(k, v string) { rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)}) })
	if _, err := kafkabroker.DecodeRecord(rec); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kafkabroker.DecodeRecord(rec); err != nil {
			b.Fatal(err)
		}
	}
}
