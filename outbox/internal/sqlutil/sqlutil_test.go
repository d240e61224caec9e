package sqlutil

import (
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/eventkit/eventkit/outbox"
)

func TestCheckTable(t *testing.T) {
	for _, ok := range []string{"", "eventkit_outbox", "s.t", "_x1"} {
		if _, err := CheckTable(ok, true); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"a;b", "1a", "a.b.c", "a-b", `a"b`, strings.Repeat("a", 60)} {
		if _, err := CheckTable(bad, true); !errors.Is(err, outbox.ErrInvalidTable) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := CheckTable("s.t", false); err == nil {
		t.Error("schema accepted")
	}
}

// FuzzParseExt: stored extensions come back exactly, and garbage gives an
// error, never a panic.
func FuzzParseExt(f *testing.F) {
	f.Add(`{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`)
	f.Add(`{}`)
	f.Add(`null`)
	f.Add(`{"a":1}`)
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseExt(&s)
		if err != nil {
			return
		}
		if len(m) > 0 {
			back := ExtText(m)
			m2, err := ParseExt(back)
			if err != nil || !maps.Equal(m, m2) {
				t.Fatalf("round trip of %q: %v %v", s, m2, err)
			}
		}
	})
}

// FuzzParseFlatAsJSON: what the fast path of ParseExt accepts, it decodes
// exactly as encoding/json does.
func FuzzParseFlatAsJSON(f *testing.F) {
	for _, s := range []string{`{"subjectseq": "12"}`, `{"a":"b","a":"c"}`, ` { } `, `{"k":"caf\u00e9"}`, `{"k":"\xff"}`,
		`{"a":"1",}`, `{"a":1}`, `{"x": "y", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`, `{"a":"b"} x`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, ok := parseFlat(s)
		if !ok {
			return
		}
		var want map[string]string
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatalf("parseFlat(%q) = %v, json.Unmarshal rejects it: %v", s, m, err)
		}
		if !maps.Equal(m, want) {
			t.Fatalf("parseFlat(%q) = %v, json.Unmarshal %v", s, m, want)
		}
	})
}

// FuzzParseTime: stored times round-trip to the nanosecond; garbage errors.
func FuzzParseTime(f *testing.F) {
	f.Add(TimeText(time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)))
	f.Add("2026-01-02T03:04:05Z")
	f.Add("not a time")
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseTime(s)
		if err != nil {
			return
		}
		back, err := ParseTime(TimeText(tm))
		if err != nil || !back.Equal(tm) {
			t.Fatalf("round trip of %q: %v %v", s, back, err)
		}
	})
}

// TestParseFlatTakesStoredForms: the fast path takes both forms the stores
// give back (ExtText's and PostgreSQL jsonb's), and leaves escapes to
// encoding/json.
func TestParseFlatTakesStoredForms(t *testing.T) {
	ext := map[string]string{"subjectseq": "12", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	for _, s := range []string{*ExtText(ext), `{"subjectseq": "12", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`} {
		if m, ok := parseFlat(s); !ok || !maps.Equal(m, ext) {
			t.Errorf("parseFlat(%s) = %v, %v", s, m, ok)
		}
	}
	if _, ok := parseFlat(`{"k":"a\"b"}`); ok {
		t.Error("parseFlat took an escape")
	}
	s := `{"k": "a\"b"}`
	if m, err := ParseExt(&s); err != nil || m["k"] != `a"b` {
		t.Errorf("ParseExt(%s) = %v, %v", s, m, err)
	}
}

// BenchmarkParseExt: the extensions of a claimed row (jsonb's text form).
func BenchmarkParseExt(b *testing.B) {
	s := `{"subjectseq": "123", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseExt(&s); err != nil {
			b.Fatal(err)
		}
	}
}
