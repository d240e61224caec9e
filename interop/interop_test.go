package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	pbformat "github.com/cloudevents/sdk-go/binding/format/protobuf/v2"
	kafkasarama "github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	natsjs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A nanosecond time at a non-UTC offset.
var when = time.Date(2026, 11, 29, 9, 30, 15, 123456789, time.FixedZone("IST", 5*3600+1800))

// A case is one event as eventkit holds it and as the SDK holds it: the
// same attributes, with the SDK's typed extensions (int32, bool) where
// eventkit has their canonical strings.
type testCase struct {
	name string
	ek   eventkit.Event
	sdk  func() event.Event
}

func cases() []testCase {
	base := func(ct string, data []byte) eventkit.Event {
		return eventkit.Event{
			ID: "id-1", Source: "/orders", Type: "order.created", Subject: "Grüße 😀 100% \"q\"", Time: when,
			DataSchema: "https://schemas.example.com/order.json", DataContentType: ct, Data: data,
			Extensions: map[string]string{"count": "42", "flag": "true", "note": "plain"},
		}
	}
	sdkOf := func(ek eventkit.Event) func() event.Event {
		return func() event.Event {
			e := event.New()
			e.SetID(ek.ID)
			e.SetSource(ek.Source)
			e.SetType(ek.Type)
			e.SetSubject(ek.Subject)
			e.SetTime(ek.Time)
			e.SetDataSchema(ek.DataSchema)
			e.SetExtension("count", int32(42))
			e.SetExtension("flag", true)
			e.SetExtension("note", "plain")
			if ek.DataContentType != "" {
				e.SetDataContentType(ek.DataContentType)
			}
			if ek.Data != nil {
				e.DataEncoded = ek.Data
				// Not JSON: structured mode carries it as data_base64.
				e.DataBase64 = !strings.Contains(ek.DataContentType, "json") && !strings.HasPrefix(ek.DataContentType, "text/")
			}
			return e
		}
	}
	var cs []testCase
	for _, c := range []struct {
		name string
		ek   eventkit.Event
	}{
		{"json object", base("application/json", []byte(`{"order_id":"o-42","items":[{"sku":"A-1","qty":2}],"total":19.99}`))},
		{"binary data_base64", base("application/octet-stream", []byte{0, 1, 2, 0xff, 0xfe, 'x'})},
		{"text", base("text/plain", []byte("héllo, world"))},
		{"no data", base("", nil)},
	} {
		cs = append(cs, testCase{c.name, c.ek, sdkOf(c.ek)})
	}
	return cs
}

// same compares every attribute and the data bytes. unescape undoes what a
// transport does to the SDK's view of string values (identity but for NATS,
// see TestNATS).
func same(t *testing.T, ek eventkit.Event, sdk event.Event, unescape func(string) string) {
	t.Helper()
	check := func(name, want, got string) {
		t.Helper()
		if unescape(got) != want {
			t.Errorf("%s: eventkit %q, SDK %q", name, want, got)
		}
	}
	if sdk.SpecVersion() != "1.0" {
		t.Errorf("specversion %q", sdk.SpecVersion())
	}
	check("id", ek.ID, sdk.ID())
	check("source", ek.Source, sdk.Source())
	check("type", ek.Type, sdk.Type())
	check("subject", ek.Subject, sdk.Subject())
	check("dataschema", ek.DataSchema, sdk.DataSchema())
	check("datacontenttype", ek.DataContentType, sdk.DataContentType())
	if !sdk.Time().Equal(ek.Time) {
		t.Errorf("time: eventkit %v, SDK %v", ek.Time, sdk.Time())
	}
	ext := map[string]string{}
	for k, v := range sdk.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			t.Fatalf("extension %s: %v", k, err)
		}
		ext[k] = unescape(s)
	}
	if !maps.Equal(ext, ek.Extensions) {
		t.Errorf("extensions: eventkit %q, SDK %q", ek.Extensions, ext)
	}
	if !bytes.Equal(sdk.Data(), ek.Data) {
		t.Errorf("data: eventkit %q, SDK %q", ek.Data, sdk.Data())
	}
}

func identity(s string) string { return s }

func TestStructuredJSON(t *testing.T) {
	t.Parallel()
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			// eventkit -> SDK
			b, err := json.Marshal(c.ek)
			if err != nil {
				t.Fatal(err)
			}
			var got event.Event
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("SDK cannot read %s: %v", b, err)
			}
			same(t, c.ek, got, identity)
			// SDK -> eventkit
			sdk := c.sdk()
			b, err = json.Marshal(&sdk)
			if err != nil {
				t.Fatal(err)
			}
			back, err := eventkit.DecodeStructured(b)
			if err != nil {
				t.Fatalf("eventkit cannot read %s: %v", b, err)
			}
			same(t, back, sdk, identity)
		})
	}
}

func TestProtobufFormat(t *testing.T) {
	t.Parallel()
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			b, err := eventkit.MarshalProto(c.ek)
			if err != nil {
				t.Fatal(err)
			}
			var got event.Event
			if err := pbformat.Protobuf.Unmarshal(b, &got); err != nil {
				t.Fatalf("SDK cannot read: %v", err)
			}
			same(t, c.ek, got, identity)
			sdk := c.sdk()
			b, err = pbformat.Protobuf.Marshal(&sdk)
			if err != nil {
				t.Fatal(err)
			}
			back, err := eventkit.DecodeProto(b)
			if err != nil {
				t.Fatalf("eventkit cannot read: %v", err)
			}
			same(t, back, sdk, identity)
		})
	}
}

// percentDecoded undoes the NATS binding's percent-encoding: the SDK does not
// decode header values (nor encode them), so it sees eventkit's spec-encoded
// values as they travel (docs/cloudevents.md).
func percentDecoded(t *testing.T) func(string) string {
	return func(s string) string {
		d, err := url.PathUnescape(s)
		if err != nil {
			t.Errorf("%q is not percent-encoded: %v", s, err)
		}
		return d
	}
}

// NATS binding through a real JetStream server: eventkit's headers read by
// the SDK's nats_jetstream binding, and the SDK's read by eventkit.
func TestNATS(t *testing.T) {
	t.Parallel()
	nc, err := nats.Connect(testenv.NATS.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := testenv.Name("ekinterop")
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Errorf("delete stream: %v", err)
		}
	}()
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip := func(t *testing.T, h nats.Header, body []byte) *nats.Msg {
		t.Helper()
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: name + ".e", Header: h, Data: body}); err != nil {
			t.Fatal(err)
		}
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return &nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}
	}
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			// eventkit -> SDK
			h := nats.Header{}
			eventkit.NATSBinding.Headers(c.ek, func(k, v string) { h[k] = []string{v} })
			if c.ek.DataContentType != "" && h.Get("ce-datacontenttype") == "" {
				t.Fatalf("no ce-datacontenttype header: %v", h)
			}
			if got := h.Get("ce-subject"); got == c.ek.Subject || strings.ContainsAny(got, " \"ü") {
				t.Fatalf("subject header %q is not percent-encoded", got)
			}
			msg := roundTrip(t, h, c.ek.Data)
			got, err := binding.ToEvent(ctx, natsjs.NewMessage(msg))
			if err != nil {
				t.Fatalf("SDK cannot read %v: %v", msg.Header, err)
			}
			same(t, c.ek, *got, percentDecoded(t))

			// SDK -> eventkit (raw UTF-8 values, content-type header)
			sdk := c.sdk()
			var body bytes.Buffer
			sh, err := natsjs.WriteMsg(ctx, binding.ToMessage(&sdk), &body)
			if err != nil {
				t.Fatal(err)
			}
			msg = roundTrip(t, sh, body.Bytes())
			back, err := eventkit.NATSBinding.Decode(func(yield func(string, string) bool) {
				for k, vs := range msg.Header {
					if len(vs) > 0 && !yield(k, vs[0]) {
						return
					}
				}
			}, "", msg.Data)
			if err != nil {
				t.Fatalf("eventkit cannot read %v: %v", msg.Header, err)
			}
			same(t, back, sdk, identity)
		})
	}
}

// Kafka binding through kfake: records written by eventkit.KafkaBinding (as
// the Kafka adapter does) read by the SDK's Kafka binding, and back.
func TestKafka(t *testing.T) {
	t.Parallel()
	const topic = "interop"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	roundTrip := func(t *testing.T, r *kgo.Record) *kgo.Record {
		t.Helper()
		r.Topic = topic
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		for {
			fs := cl.PollFetches(ctx)
			if err := fs.Err(); err != nil {
				t.Fatal(err)
			}
			if recs := fs.Records(); len(recs) > 0 {
				if len(recs) != 1 {
					t.Fatalf("%d records", len(recs))
				}
				return recs[0]
			}
		}
	}
	for _, c := range cases() {
		// Not parallel: one consumer reads the records in order.
		t.Run(c.name, func(t *testing.T) {
			r := &kgo.Record{Value: c.ek.Data}
			eventkit.KafkaBinding.Headers(c.ek, func(k, v string) { r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)}) })
			got := roundTrip(t, r)
			h := map[string][]byte{}
			ct := ""
			for _, x := range got.Headers {
				h[x.Key] = x.Value
				if x.Key == "content-type" {
					ct = string(x.Value)
				}
			}
			sdkGot, err := binding.ToEvent(ctx, kafkasarama.NewMessage(got.Value, ct, h))
			if err != nil {
				t.Fatalf("SDK cannot read: %v", err)
			}
			same(t, c.ek, *sdkGot, identity)

			sdk := c.sdk()
			var pm sarama.ProducerMessage
			if err := kafkasarama.WriteProducerMessage(ctx, binding.ToMessage(&sdk), &pm); err != nil {
				t.Fatal(err)
			}
			r = &kgo.Record{}
			if pm.Value != nil {
				if r.Value, err = pm.Value.Encode(); err != nil {
					t.Fatal(err)
				}
			}
			for _, x := range pm.Headers {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: string(x.Key), Value: x.Value})
			}
			got = roundTrip(t, r)
			back, err := eventkit.KafkaBinding.Decode(func(yield func(string, string) bool) {
				for _, x := range got.Headers {
					if !yield(x.Key, string(x.Value)) {
						return
					}
				}
			}, "", got.Value)
			if err != nil {
				t.Fatalf("eventkit cannot read %v: %v", got.Headers, err)
			}
			if back.Data == nil && len(got.Value) == 0 && sdk.Data() == nil {
				back.Data = nil
			}
			same(t, back, sdk, identity)
		})
	}
}
