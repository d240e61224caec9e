package natsbroker

import (
	"testing"

	"github.com/eventkit/eventkit"
)

func codecBenchEvent() eventkit.Event {
	return eventkit.New("bench.event", "application/octet-stream", make([]byte, 1024),
		eventkit.WithSubject("order-1"), eventkit.WithSource("/bench"))
}

// BenchmarkEncodeHeaders: the adapter's per-event share of Publish (header
// map and encoded size), without a server.
// "twopass" is the path before encodeHeadersSize.
func BenchmarkEncodeHeaders(b *testing.B) {
	b.Run("onepass", func(b *testing.B) { benchEncode(b, false) })
	b.Run("twopass", func(b *testing.B) { benchEncode(b, true) })
}

func benchEncode(b *testing.B, old bool) {
	evs := make([]eventkit.Event, 500)
	for i := range evs {
		evs[i] = codecBenchEvent()
	}
	b.ReportAllocs()
	for b.Loop() {
		a := newArena(evs)
		for i := range evs {
			if old {
				h := encodeHeaders(&evs[i], false, a)
				_ = encodedSize(h, evs[i].Data)
			} else {
				_, _ = encodeHeadersSize(&evs[i], false, a)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/event")
}

// BenchmarkDecode: building an event from a delivery's headers and body;
// "iter" is the same binding through its iterator (the path before
// DecodeHeader).
func BenchmarkDecode(b *testing.B) {
	e := codecBenchEvent()
	h := encodeHeaders(&e, false, nil)
	b.Run("map", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decode(h, e.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("iter", func(b *testing.B) {
		seq := func(yield func(string, string) bool) {
			for k, vs := range h {
				if len(vs) > 0 && !yield(k, vs[0]) {
					return
				}
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := eventkit.NATSBinding.Decode(seq, "", e.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
