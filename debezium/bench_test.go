package debezium_test

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/kafkabroker"
	"github.com/eventkit/eventkit/debezium"
)

// BenchmarkDecode: decoding the router's record of an outbox row (the
// Kafka Connect configuration of docs/debezium.md, and the JSON converter
// with schemas) against the baseline of decoding the CloudEvents record
// eventkit's relay publishes for the same event, in the same run.
func BenchmarkDecode(b *testing.B) {
	ev := eventkit.New("acct.bumped", "application/json", []byte(`{"n":3,"owner":"ada lovelace"}`),
		eventkit.WithSubject("acct-1"), eventkit.WithExtension(eventkit.SubjectSeqExtension, "3"))
	ev.Source = "urn:acct"
	ce := kafkabroker.Record("acct", ev)
	dbz := routerRecord("acct", ev.ID, ev.Subject, 3, 3)
	withSchema := fixtureNamed(b, "eventkit-layout-json-converter-with-schema")
	ws := &kgo.Record{Key: []byte(*withSchema.Key), Value: withSchema.value(b)}
	for _, h := range withSchema.Headers {
		ws.Headers = append(ws.Headers, kgo.RecordHeader{Key: h[0], Value: []byte(h[1])})
	}
	cases := []struct {
		name string
		run  func() error
	}{
		{"cloudevents-baseline", func() error { _, err := kafkabroker.DecodeRecord(ce); return err }},
		{"debezium-raw", func() error { _, err := debezium.Format{}.DecodeRecord(dbz); return err }},
		{"debezium-json-schema", func() error {
			_, err := debezium.Format{Key: debezium.JSONWithSchema, Value: debezium.JSONWithSchema, Headers: debezium.JSONWithSchema}.DecodeRecord(ws)
			return err
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
