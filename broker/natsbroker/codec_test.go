package natsbroker

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eventkit/eventkit"
)

func fullEvent() eventkit.Event {
	return eventkit.Event{
		ID: eventkit.NewID(), Type: "order.created", Source: "/orders", Subject: "order-1",
		Time:        time.Date(2026, 11, 29, 10, 0, 0, 123456789, time.FixedZone("x", 3600)),
		DataVersion: "2", DataContentType: "application/json", DataSchema: "https://example.com/s",
		Data:       []byte(`{"a":1}`),
		Extensions: map[string]string{"traceparent": "00-abc-def-01", "correlationid": "c1"},
	}
}

func TestEncodeHeadersMatchesBinding(t *testing.T) {
	evs := []eventkit.Event{fullEvent(), eventkit.New("t", "", nil), fullEvent(), fullEvent()}
	evs[2].Time = time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	evs[3].Subject, evs[3].DataContentType = "Grüße 100%", "text/plain; charset=utf-8" // percent-encoded
	shared := newArena(evs)
	var hs []nats.Header
	for i := range evs {
		hs = append(hs, encodeHeaders(&evs[i], false, shared))
	}
	for i, e := range evs {
		want := map[string]string{}
		eventkit.NATSBinding.Headers(e, func(k, v string) { want[k] = v })
		want[hMsgID] = e.ID
		h := encodeHeaders(&e, false, nil)
		if !reflect.DeepEqual(h, hs[i]) {
			t.Errorf("event %d: with an arena %v, without %v", i, hs[i], h)
		}
		if len(h) != len(want) {
			t.Fatalf("headers %v, want %v", h, want)
		}
		for k, v := range want {
			if vs := h[k]; len(vs) != 1 || vs[0] != v {
				t.Errorf("header %s = %v, want %q", k, vs, v)
			}
		}
		got, err := decode(h, e.Data)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != e.ID || !got.Time.Equal(e.Time) || got.Extension("traceparent") != e.Extension("traceparent") ||
			got.Subject != e.Subject || got.DataContentType != e.DataContentType {
			t.Errorf("round trip: got %+v, want %+v", got, e)
		}
	}
}

func TestEncodedSize(t *testing.T) {
	e := fullEvent()
	m := &nats.Msg{Subject: "s", Header: encodeHeaders(&e, false, nil), Data: e.Data}
	if got, want := encodedSize(m.Header, e.Data), m.Size()-len(m.Subject); got != want {
		t.Fatalf("encodedSize = %d, nats says %d", got, want)
	}
	for _, noMsgID := range []bool{false, true} {
		h, n := encodeHeadersSize(&e, noMsgID, nil)
		m := &nats.Msg{Subject: "s", Header: h, Data: e.Data}
		if want := m.Size() - len(m.Subject); n != want {
			t.Fatalf("encodeHeadersSize (noMsgID %v) size = %d, nats says %d", noMsgID, n, want)
		}
	}
}

func TestDecodeForeign(t *testing.T) {
	for _, h := range []nats.Header{nil, {"x-other": {"1"}}, {"ce-specversion": {"1.0"}, "ce-id": {"x"}}} {
		_, err := decode(h, []byte("garbage"))
		var de *eventkit.DecodeError
		if !errors.As(err, &de) || string(de.Raw) != "garbage" {
			t.Errorf("decode(%v) = %v, want a DecodeError keeping the body", h, err)
		}
	}
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{"orders": "orders", "a_b": "a_b", "my-topic_1": "my-topic_1"} {
		if got := sanitizeName(in); got != want {
			t.Errorf("sanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
	a, b := sanitizeName("a.b"), sanitizeName("a_b")
	if a == b || strings.Contains(a, ".") || !strings.HasPrefix(a, "a_b_") || len(a) != len("a_b_")+8 {
		t.Errorf("sanitizeName(a.b) = %q, sanitizeName(a_b) = %q", a, b)
	}
	if sanitizeName("x.y.z") == sanitizeName("x.y_z") {
		t.Error("collision")
	}
}

func TestTypeToken(t *testing.T) {
	for in, want := range map[string]string{
		"order.created": "order.created", "OrderCreated": "OrderCreated", "": "_",
		"a b*c>d": "a_b_c_d", ".a": "_a", "a..b": "a__b", "a.b.": "a_b_", "über.x": "__ber.x",
	} {
		if got := typeToken(in); got != want {
			t.Errorf("typeToken(%q) = %q, want %q", in, got, want)
		}
	}
	if got := typeToken(strings.Repeat("a.", 200)); len(got) > maxTypeToken || !plainSubject(got) {
		t.Errorf("long type: %q", got)
	}
}

func TestDeliveredCount(t *testing.T) {
	for in, want := range map[string]int{
		"$JS.ACK.ORDERS.g.3.10.9.1700000000000000000.5":                3,
		"$JS.ACK.dom.ACCHASH.ORDERS.g.7.10.9.1700000000000000000.0":    7,
		"$JS.ACK.dom.ACCHASH.ORDERS.g.12.10.9.1700000000000000000.0.r": 12,
		"$JS.ACK.ORDERS.g.x.10.9.1.0":                                  0, "_INBOX.abc": 0, "$JS.ACK.a.b": 0, "": 0, "$JS.ACK.ORDERS.g.0.10.9.1.0": 0,
	} {
		got, ok := deliveredCount(in)
		if got != want || ok != (want > 0) {
			t.Errorf("deliveredCount(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}

// FuzzDecode feeds arbitrary headers and bodies to the decoder: it never
// panics, and a failure is always a *eventkit.DecodeError keeping the body.
func FuzzDecode(f *testing.F) {
	e := fullEvent()
	var sb strings.Builder
	for k, vs := range encodeHeaders(&e, false, nil) {
		sb.WriteString(k + ": " + vs[0] + "\n")
	}
	f.Add(sb.String(), e.Data)
	f.Add("ce-specversion: 1.0\nce-id: 1\nce-source: s\nce-type: t\nce-time: bad", []byte("x"))
	f.Add("", []byte("\x00\xff"))
	f.Fuzz(func(t *testing.T, headers string, body []byte) {
		h := nats.Header{}
		for line := range strings.SplitSeq(headers, "\n") {
			k, v, _ := strings.Cut(line, ": ")
			h.Add(k, v)
		}
		ev, err := decode(h, body)
		if err != nil {
			var de *eventkit.DecodeError
			if !errors.As(err, &de) || string(de.Raw) != string(body) {
				t.Fatalf("error %v is not a DecodeError keeping the body", err)
			}
			return
		}
		if ev.ID == "" || ev.Type == "" || ev.Source == "" {
			t.Fatalf("decoded an event without required attributes: %+v", ev)
		}
	})
}

// FuzzNames checks that every subject and name the adapter derives is valid
// for NATS.
func FuzzNames(f *testing.F) {
	f.Add("order.created", "$JS.ACK.S.c.1.2.3.4.5")
	f.Add("a..b c", "$JS.ACK.d.h.S.c.1.2.3.4.5.r")
	f.Fuzz(func(t *testing.T, typ, reply string) {
		if tok := typeToken(typ); !plainSubject(tok) || len(tok) > maxTypeToken {
			t.Fatalf("typeToken(%q) = %q is not a valid subject", typ, tok)
		}
		if n, ok := deliveredCount(reply); ok && n < 1 {
			t.Fatalf("deliveredCount(%q) = %d", reply, n)
		}
		if strings.Trim(typ, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == "" && typ != "" {
			if s := sanitizeName(typ); strings.Contains(s, ".") {
				t.Fatalf("sanitizeName(%q) = %q", typ, s)
			}
		}
	})
}
