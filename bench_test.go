package eventkit_test

import (
	"encoding/json"
	"fmt"
	"iter"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/eventkitpb"
)

// benchEvent is a typical event with a 1 KB JSON payload.
func benchEvent() eventkit.Event {
	e := fullEvent()
	var sb strings.Builder
	sb.WriteString(`{"order_id":"order-42","customer_id":"c-7","items":[`)
	for i := 0; sb.Len() < 1000; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"sku":"SKU-%04d","name":"Product %d","qty":%d,"unit_price_cents":%d}`, i, i, i%5+1, 100*i+99)
	}
	sb.WriteString(`],"currency":"EUR"}`)
	e.Data = []byte(sb.String())
	return e
}

// plainEvent is the baseline: the same data as a struct for encoding/json.
type plainEvent struct {
	SpecVersion     string            `json:"specversion"`
	ID              string            `json:"id"`
	Source          string            `json:"source"`
	Type            string            `json:"type"`
	Subject         string            `json:"subject,omitempty"`
	Time            time.Time         `json:"time"`
	DataVersion     string            `json:"dataversion,omitempty"`
	DataContentType string            `json:"datacontenttype,omitempty"`
	DataSchema      string            `json:"dataschema,omitempty"`
	Extensions      map[string]string `json:"extensions,omitempty"`
	Data            json.RawMessage   `json:"data"`
}

func toPlain(e eventkit.Event) plainEvent {
	return plainEvent{"1.0", e.ID, e.Source, e.Type, e.Subject, e.Time, e.DataVersion, e.DataContentType, e.DataSchema, e.Extensions, e.Data}
}

// natsHeader is what nats.Header is: a map of string slices.
type natsHeader map[string][]string

func (h natsHeader) all() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for k, v := range h {
			if len(v) > 0 && !yield(k, v[0]) {
				return
			}
		}
	}
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkEncode(b *testing.B) {
	e := benchEvent()
	b.Run("structured-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(e.Data)))
		for b.Loop() {
			if _, err := e.MarshalJSON(); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	b.Run("structured-json-append", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(e.Data)))
		buf := make([]byte, 0, 4096)
		for b.Loop() {
			buf = e.AppendJSON(buf[:0])
		}
		reportRate(b)
	})
	b.Run("nats-headers", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(e.Data)))
		for b.Loop() {
			h := make(natsHeader, eventkit.NATSBinding.HeaderCount(e))
			eventkit.NATSBinding.Headers(e, func(k, v string) { h[k] = []string{v} })
		}
		reportRate(b)
	})
	b.Run("protobuf", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(e.Data)))
		for b.Loop() {
			if _, err := eventkit.MarshalProto(e); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	b.Run("baseline-encoding-json", func(b *testing.B) {
		p := toPlain(e)
		b.ReportAllocs()
		b.SetBytes(int64(len(e.Data)))
		for b.Loop() {
			if _, err := json.Marshal(&p); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	b.Run("baseline-proto-marshal", func(b *testing.B) {
		pb := toEnvelope(e)
		b.ReportAllocs()
		b.SetBytes(int64(len(e.Data)))
		for b.Loop() {
			if _, err := proto.Marshal(pb); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
}

func BenchmarkDecode(b *testing.B) {
	e := benchEvent()
	b.Run("structured-json", func(b *testing.B) {
		in, _ := e.MarshalJSON()
		b.ReportAllocs()
		b.SetBytes(int64(len(e.Data)))
		for b.Loop() {
			if _, err := eventkit.DecodeStructured(in); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	b.Run("nats-headers", func(b *testing.B) {
		h := natsHeader{}
		eventkit.NATSBinding.Headers(e, func(k, v string) { h[k] = []string{v} })
		b.ReportAllocs()
		b.SetBytes(int64(len(e.Data)))
		for b.Loop() {
			if _, err := eventkit.NATSBinding.Decode(h.all(), "", e.Data); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	b.Run("protobuf", func(b *testing.B) {
		in, _ := eventkit.MarshalProto(e)
		b.ReportAllocs()
		b.SetBytes(int64(len(e.Data)))
		for b.Loop() {
			if _, err := eventkit.DecodeProto(in); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	b.Run("baseline-encoding-json", func(b *testing.B) {
		in, _ := json.Marshal(toPlain(e))
		b.ReportAllocs()
		b.SetBytes(int64(len(e.Data)))
		for b.Loop() {
			var p plainEvent
			if err := json.Unmarshal(in, &p); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	b.Run("baseline-proto-unmarshal", func(b *testing.B) {
		in, _ := proto.Marshal(toEnvelope(e))
		b.ReportAllocs()
		b.SetBytes(int64(len(e.Data)))
		for b.Loop() {
			if err := proto.Unmarshal(in, new(eventkitpb.Envelope)); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
}

// BenchmarkTyped measures the registry path a producer and a consumer take on
// top of the envelope: NewTyped + Decode[T] of a JSON and a protobuf payload.
func BenchmarkTyped(b *testing.B) {
	r := newTestRegistry(b)
	v := orderCreatedV2{OrderID: "o-1", Total: 1999, Currency: "EUR"}
	b.Run("json-new", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := eventkit.NewTyped(r, v); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	ev, _ := eventkit.NewTyped(r, v)
	b.Run("json-decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := eventkit.Decode[orderCreatedV2](r, ev); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	b.Run("baseline-json-unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var o orderCreatedV2
			if err := json.Unmarshal(ev.Data, &o); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
}
