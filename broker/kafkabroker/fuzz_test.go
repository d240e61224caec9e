package kafkabroker

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
)

func FuzzParseMeta(f *testing.F) {
	f.Add(commitMeta{Delivered: 41, Attempt: 2}.String())
	f.Add(commitMeta{Delivered: -1}.String())
	f.Add("kgo-member-id")
	f.Add("eventkit1 d=9999999999999999999999 a=1")
	f.Fuzz(func(t *testing.T, s string) {
		m, ok := parseMeta(s)
		if !ok {
			if m.Delivered != -1 {
				t.Fatalf("rejected metadata gives Delivered %d", m.Delivered)
			}
			return
		}
		if m.Delivered < -1 || m.Attempt < 0 {
			t.Fatalf("accepted out-of-range metadata %+v", m)
		}
		if back, ok := parseMeta(m.String()); !ok || back != m {
			t.Fatalf("round trip: %+v -> %q -> %+v", m, m.String(), back)
		}
	})
}

func FuzzParseRetry(f *testing.F) {
	hs := retryHeaders(nil, "orders", 3, time.UnixMilli(1_800_000_000_000))
	f.Add(string(hs[0].Value), string(hs[1].Value), string(hs[2].Value))
	f.Add("", "-1", "x")
	f.Add("t", "99999999999999999999", "9223372036854775807")
	f.Fuzz(func(t *testing.T, topic, attempt, due string) {
		ri := parseRetry([]kgo.RecordHeader{
			{Key: HeaderTopic, Value: []byte(topic)},
			{Key: HeaderAttempt, Value: []byte(attempt)},
			{Key: HeaderDue, Value: []byte(due)},
		}, "fallback")
		if ri.attempt < 1 || ri.topic == "" {
			t.Fatalf("parseRetry gave %+v", ri)
		}
	})
}

// FuzzDecodeRecord: any headers and value decode to an event or a
// *eventkit.DecodeError keeping the value; never a panic.
func FuzzDecodeRecord(f *testing.F) {
	good := Record("t", eventkit.New("order.created", "application/json", []byte(`{"a":1}`), eventkit.WithSubject("s")))
	var keys, vals []byte
	for _, h := range good.Headers {
		keys = append(append(keys, h.Key...), 0)
		vals = append(append(vals, h.Value...), 0)
	}
	f.Add(keys, vals, good.Value)
	f.Add([]byte("ce_specversion\x00ce_time\x00"), []byte("1.0\x00not a time\x00"), []byte{0xff})
	f.Add([]byte{}, []byte{}, []byte("garbage"))
	f.Fuzz(func(t *testing.T, keys, vals, value []byte) {
		r := &kgo.Record{Value: value}
		ks, vs := split(keys), split(vals)
		for i := range min(len(ks), len(vs)) {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: string(ks[i]), Value: vs[i]})
		}
		e, err := DecodeRecord(r)
		if err != nil {
			var de *eventkit.DecodeError
			if !errors.As(err, &de) || string(de.Raw) != string(value) {
				t.Fatalf("error %v is not a DecodeError keeping the value", err)
			}
			return
		}
		if e.ID == "" || e.Type == "" || e.Source == "" {
			t.Fatalf("decoded an event without required attributes: %+v", e)
		}
	})
}

func split(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		out = append(out, b[:i])
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return out
}
