package redisbroker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
)

// FuzzDecodeEntry feeds arbitrary stream entries to the decoder: it must
// never panic, and a failure must be a *eventkit.DecodeError keeping raw
// bytes. The input is "field=value" lines.
func FuzzDecodeEntry(f *testing.F) {
	ev := eventkit.New("order.created", "application/json", []byte(`{"id":1}`),
		eventkit.WithSubject("o-1"), eventkit.WithExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
		eventkit.WithTime(time.Date(2026, 11, 29, 10, 0, 0, 1, time.UTC)))
	var sb strings.Builder
	vals := encode(ev)
	for i := 0; i < len(vals); i += 2 {
		sb.WriteString(fieldString(vals[i]) + "=" + fieldString(vals[i+1]) + "\n")
	}
	f.Add(sb.String())
	f.Add("foo=bar\n")
	f.Add("data=\x00\xff\n")
	f.Add("ce_specversion=1.0\nce_id=x\nce_source=/s\nce_type=t\nce_time=2026-13-01T00:00:00Z\ndata=x\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		values := map[string]any{}
		for line := range strings.SplitSeq(in, "\n") {
			k, v, _ := strings.Cut(line, "=")
			values[k] = v
		}
		e, err := decodeEntry(values)
		if err != nil {
			var de *eventkit.DecodeError
			if !errors.As(err, &de) || !errors.Is(err, eventkit.ErrDecode) {
				t.Fatalf("error %v is not a *eventkit.DecodeError", err)
			}
			if len(de.Raw) == 0 {
				t.Fatalf("raw bytes not kept for %q", in)
			}
			if e.ID != "" {
				t.Fatal("event not zero on error")
			}
			return
		}
		if e.ID == "" || e.Source == "" || e.Type == "" {
			t.Fatalf("decoded an event without required attributes: %+v", e)
		}
	})
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	ev := eventkit.New("order.created", "application/json", []byte(`{"id":1}`),
		eventkit.WithSubject("o-1"), eventkit.WithDataSchema("https://x/y"), eventkit.WithExtension("correlationid", "c"))
	vals := encode(ev)
	m := map[string]any{}
	for i := 0; i < len(vals); i += 2 {
		v := vals[i+1]
		if b, ok := v.([]byte); ok {
			v = string(b)
		}
		m[vals[i].(string)] = v
	}
	got, err := decodeEntry(m)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ev.ID || got.Subject != ev.Subject || !got.Time.Equal(ev.Time) || string(got.Data) != string(ev.Data) ||
		got.DataSchema != ev.DataSchema || got.Extension("correlationid") != "c" || got.DataContentType != ev.DataContentType {
		t.Fatalf("round trip: got %+v, want %+v", got, ev)
	}
}

// encode is a hand-unrolled eventkit.RedisBinding.Headers: they must agree.
func TestEncodeMatchesBinding(t *testing.T) {
	for _, ev := range []eventkit.Event{
		eventkit.New("a.b", "application/json", []byte("{}")),
		eventkit.New("a.b", "", nil, eventkit.WithSubject("s"), eventkit.WithDataSchema("https://x"), eventkit.WithDataVersion("7"),
			eventkit.WithExtension("traceparent", "t"), eventkit.WithExtension("correlationid", "c")),
		{ID: "x", Source: "/s", Type: "t"}, // no time
	} {
		want := map[string]string{}
		eventkit.RedisBinding.Headers(ev, func(k, v string) { want[k] = v })
		vals := encode(ev)
		got := map[string]string{}
		for i := 0; i+1 < len(vals); i += 2 {
			if vals[i] == DataField {
				continue
			}
			got[vals[i].(string)] = vals[i+1].(string)
		}
		if len(got) != len(want) {
			t.Fatalf("encode gives %v, binding %v", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("field %s: encode %q, binding %q", k, got[k], v)
			}
		}
	}
}
