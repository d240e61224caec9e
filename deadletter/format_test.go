package deadletter

import (
	"testing"
	"time"

	"github.com/eventkit/eventkit"
)

func FuzzDeadLetterInfo(f *testing.F) {
	f.Add("orders", "2", "2024-01-01T00:00:00Z", "boom", `{"a":"b"}`)
	f.Add("", "x", "not a time", "", `{`)
	f.Fuzz(func(t *testing.T, topic, attempts, tm, errText, headers string) {
		e := eventkit.New("x", "", nil, eventkit.WithExtension(ExtTopic, topic),
			eventkit.WithExtension(ExtAttempts, attempts),
			eventkit.WithExtension(ExtFirstFailure, tm),
			eventkit.WithExtension(ExtError, errText),
			eventkit.WithExtension(ExtHeaders, headers))
		info, ok := InfoOf(e)
		if !ok || info.Topic != topic {
			t.Fatalf("info %+v ok %v", info, ok)
		}
		if o := Original(e); len(o.Extensions) != 0 {
			t.Fatalf("Original kept %v", o.Extensions)
		}
	})
}

// Whatever the error text, raw bytes and headers, the dead letter built is a
// valid event whose attributes read back.
func FuzzUndecodable(f *testing.F) {
	f.Add([]byte("\x00garbage"), "ce-type", "x\ny", "bad: \x01 control")
	f.Fuzz(func(t *testing.T, raw []byte, hk, hv, errText string) {
		now := time.Now()
		ev := Undecodable(raw, map[string]string{hk: hv}, "orders", "billing",
			Failure{Reason: ReasonUndecodable, Attempts: 1, First: now, Last: now, Err: errString(errText)})
		if len(raw) < 1<<19 {
			if err := ev.Validate(0); err != nil {
				t.Fatalf("invalid dead letter: %v", err)
			}
		}
		info, ok := InfoOf(ev)
		if !ok || !info.Undecodable || info.Topic != "orders" || string(ev.Data) != string(raw) {
			t.Fatalf("info %+v", info)
		}
	})
}

type errString string

func (e errString) Error() string { return string(e) }
