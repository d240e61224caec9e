package sqlutil

import (
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
