package eventkit_test

import (
	"bytes"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/eventkit/eventkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fullEvent has every attribute set.
func fullEvent() eventkit.Event {
	return eventkit.Event{
		ID:              "0193c7a4-6d1e-7c3b-9a55-1f2e3d4c5b6a",
		Type:            "order.created",
		Source:          "/orders",
		Subject:         "order-42",
		Time:            time.Date(2026, 11, 29, 9, 30, 15, 123456789, time.UTC),
		DataVersion:     "2",
		DataContentType: "application/json",
		DataSchema:      "https://schemas.example.com/order.created/2.json",
		Data:            []byte(`{"order_id":"order-42","items":[{"sku":"A-1","qty":2}],"total":19.99}`),
		Extensions: map[string]string{
			"traceparent":   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			"tracestate":    "rojo=00f067aa0ba902b7",
			"correlationid": "corr-1",
			"causationid":   "cause-1",
		},
	}
}

// sampleEvents covers every kind of attribute and payload the envelope must
// carry unchanged: full, minimal, unicode, binary and text payloads, empty and
// absent payloads, many extensions.
func sampleEvents() map[string]eventkit.Event {
	out := map[string]eventkit.Event{"full": fullEvent()}

	out["minimal"] = eventkit.Event{ID: "1", Type: "t", Source: "s", Time: time.Unix(1, 0).UTC()}

	u := fullEvent()
	u.ID = "ïd-✓-日本語"
	u.Type = "commande.créée"
	u.Source = "/bestellungen/größe"
	u.Subject = "客户-🙂"
	u.DataSchema = "urn:schéma:1"
	u.Data = []byte(`{"name":"Zoë \"the\" ✓","emoji":"🙂","escaped":"\u00e9\n\t"}`)
	u.Extensions = map[string]string{"note": "naïve café ☕", "quote": `he said "hi" \ back`}
	out["unicode"] = u

	bin := fullEvent()
	bin.DataContentType = "application/octet-stream"
	bin.Data = []byte{0, 1, 2, 0xfe, 0xff, '"', '\\', '\n', 0x80, 0xc3}
	out["binary"] = bin

	pb := fullEvent()
	pb.DataContentType = "application/protobuf"
	pb.Data = []byte{0x0a, 0x08, 'o', 'r', 'd', 'e', 'r', '-', '4', '2', 0x28, 0x02}
	out["protobuf payload"] = pb

	txt := fullEvent()
	txt.DataContentType = "text/plain; charset=utf-8"
	txt.Data = []byte("hello, wörld\nline 2\t\"quoted\"")
	out["text"] = txt

	badUTF8 := fullEvent()
	badUTF8.DataContentType = "text/plain"
	badUTF8.Data = []byte("not utf-8: \xff\xfe")
	out["text with invalid utf-8 payload"] = badUTF8

	jsonBadUTF8 := fullEvent()
	jsonBadUTF8.Data = []byte("{\"s\":\"\xff\"}")
	out["json with invalid utf-8 in a string"] = jsonBadUTF8

	xml := fullEvent()
	xml.DataContentType = "application/xml"
	xml.Data = []byte(`<order id="42">ok</order>`)
	out["xml"] = xml

	empty := fullEvent()
	empty.DataContentType = "application/octet-stream"
	empty.Data = []byte{}
	out["empty payload"] = empty

	emptyJSON := fullEvent()
	emptyJSON.Data = []byte{}
	out["empty json payload"] = emptyJSON

	noData := fullEvent()
	noData.Data = nil
	noData.DataContentType = ""
	out["no payload"] = noData

	cloudJSON := fullEvent()
	cloudJSON.DataContentType = "application/vnd.order+json"
	cloudJSON.Data = []byte(`[1,2.5,"x",null,true,{"a":{}}]`)
	out["+json payload"] = cloudJSON

	ext := fullEvent()
	ext.Extensions = map[string]string{}
	for i := range 30 {
		ext.Extensions[fmt.Sprintf("ext%d", i)] = strings.Repeat("v", i)
	}
	out["many extensions, one empty"] = ext

	nonUTC := fullEvent()
	nonUTC.Time = time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("CET", 3600))
	out["non-UTC time"] = nonUTC

	big := fullEvent()
	big.DataContentType = "application/octet-stream"
	big.Data = bytes.Repeat([]byte{0xab, 0x00, 0x7f}, 100_000)
	out["300 KB binary"] = big
	return out
}

// diffEvents describes how got differs from want ("" if equal). Times compare
// as instants (encodings carry UTC); nil and empty Extensions are equal.
// Data compares by content, and also by nil-ness when checkNil is set.
func diffEvents(want, got eventkit.Event, checkNil bool) string {
	var d []string
	str := func(name, w, g string) {
		if w != g {
			d = append(d, fmt.Sprintf("%s: want %q, got %q", name, w, g))
		}
	}
	str("ID", want.ID, got.ID)
	str("Type", want.Type, got.Type)
	str("Source", want.Source, got.Source)
	str("Subject", want.Subject, got.Subject)
	str("DataVersion", want.DataVersion, got.DataVersion)
	str("DataContentType", want.DataContentType, got.DataContentType)
	str("DataSchema", want.DataSchema, got.DataSchema)
	if !want.Time.Equal(got.Time) {
		d = append(d, fmt.Sprintf("Time: want %v, got %v", want.Time, got.Time))
	}
	if !got.Time.IsZero() && got.Time.Location() != time.UTC {
		d = append(d, fmt.Sprintf("Time: not UTC: %v", got.Time))
	}
	if !bytes.Equal(want.Data, got.Data) {
		d = append(d, fmt.Sprintf("Data: want %q, got %q", abbrev(want.Data), abbrev(got.Data)))
	} else if checkNil && (want.Data == nil) != (got.Data == nil) {
		d = append(d, fmt.Sprintf("Data: want nil=%v, got nil=%v", want.Data == nil, got.Data == nil))
	}
	if !maps.Equal(want.Extensions, got.Extensions) {
		d = append(d, fmt.Sprintf("Extensions: want %q, got %q", want.Extensions, got.Extensions))
	}
	return strings.Join(d, "; ")
}

func abbrev(b []byte) []byte {
	if len(b) > 80 {
		return append(b[:80:80], "..."...)
	}
	return b
}

// headerMap collects what Binding.Headers sets.
func headerMap(b eventkit.Binding, e eventkit.Event) map[string]string {
	h := make(map[string]string, b.HeaderCount(e))
	b.Headers(e, func(k, v string) { h[k] = v })
	return h
}

// bindingRoundTrip encodes e with b and decodes it again, passing the content
// type the way the protocol carries it.
func bindingRoundTrip(b eventkit.Binding, e eventkit.Event) (eventkit.Event, map[string]string, error) {
	h := headerMap(b, e)
	ct := ""
	if b.ContentTypeKey == "" {
		ct = e.DataContentType // AMQP: the message's own content-type property
	}
	got, err := b.Decode(eventkit.MapHeaders(h), ct, e.Data)
	return got, h, err
}
