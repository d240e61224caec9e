package eventkit_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
)

func TestValidateAcceptsSamples(t *testing.T) {
	t.Parallel()
	for name, e := range sampleEvents() {
		if err := e.Validate(0); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	e := eventkit.New("order.created", "application/json", []byte(`{}`), eventkit.WithSubject("o-1"),
		eventkit.WithExtension("traceparent", "00-abc"), eventkit.WithDataSchema("urn:x"))
	if err := e.Validate(0); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 1025)
	cases := []struct {
		field string
		mut   func(*eventkit.Event)
	}{
		{"id", func(e *eventkit.Event) { e.ID = "" }},
		{"type", func(e *eventkit.Event) { e.Type = "" }},
		{"source", func(e *eventkit.Event) { e.Source = "" }},
		{"time", func(e *eventkit.Event) { e.Time = time.Time{} }},
		{"id", func(e *eventkit.Event) { e.ID = "\xff" }},
		{"type", func(e *eventkit.Event) { e.Type = "a\x00b" }},
		{"source", func(e *eventkit.Event) { e.Source = long }},
		{"subject", func(e *eventkit.Event) { e.Subject = "line\nbreak" }},
		{"subject", func(e *eventkit.Event) { e.Subject = "\xc3" }},
		{"dataversion", func(e *eventkit.Event) { e.DataVersion = "\x7f" }},
		{"datacontenttype", func(e *eventkit.Event) { e.DataContentType = long }},
		{"dataschema", func(e *eventkit.Event) { e.DataSchema = "\xfe" }},
		{"extensions[Trace]", func(e *eventkit.Event) { e.Extensions["Trace"] = "x" }},
		{"extensions[trace-id]", func(e *eventkit.Event) { e.Extensions["trace-id"] = "x" }},
		{"extensions[subject]", func(e *eventkit.Event) { e.Extensions["subject"] = "x" }},
		{"extensions[dataversion]", func(e *eventkit.Event) { e.Extensions["dataversion"] = "x" }},
		{"extensions[]", func(e *eventkit.Event) { e.Extensions[""] = "x" }},
		{"extensions[abcdefghijklmnopqrstu]", func(e *eventkit.Event) { e.Extensions["abcdefghijklmnopqrstu"] = "x" }},
		{"extensions[traceparent]", func(e *eventkit.Event) { e.Extensions["traceparent"] = "a\tb" }},
		{"extensions[traceparent]", func(e *eventkit.Event) { e.Extensions["traceparent"] = "\xff" }},
	}
	for _, tc := range cases {
		e := fullEvent()
		tc.mut(&e)
		err := e.Validate(0)
		var ve *eventkit.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: err = %v, want *ValidationError", tc.field, err)
			continue
		}
		if ve.Field != tc.field || ve.Reason == "" || ve.ID != e.ID {
			t.Errorf("field %q: got %+v", tc.field, ve)
		}
		if !errors.Is(err, eventkit.ErrInvalidEvent) || errors.Is(err, eventkit.ErrTooLarge) || !eventkit.IsPermanent(err) {
			t.Errorf("%s: %v does not wrap ErrInvalidEvent only", tc.field, err)
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: message %q does not name the field", tc.field, err)
		}
	}
	// Exactly at the length limit is fine; 20-character extension names too.
	e := fullEvent()
	e.Source = strings.Repeat("a", 1024)
	e.Extensions["abcdefghijklmnopqrst"] = "x"
	if err := e.Validate(0); err != nil {
		t.Fatal(err)
	}
}

func TestValidateSize(t *testing.T) {
	t.Parallel()
	e := fullEvent()
	e.Data = make([]byte, eventkit.DefaultMaxSize)
	err := e.Validate(0)
	var se *eventkit.SizeError
	if !errors.As(err, &se) || !errors.Is(err, eventkit.ErrTooLarge) || !errors.Is(err, eventkit.ErrInvalidEvent) {
		t.Fatalf("err = %v, want *SizeError", err)
	}
	if se.Size != e.Size() || se.Limit != eventkit.DefaultMaxSize || se.ID != e.ID || !eventkit.IsPermanent(err) {
		t.Fatalf("%+v", se)
	}

	// A custom limit, exactly at and one over.
	e = fullEvent()
	if err := e.Validate(e.Size()); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if err := e.Validate(e.Size() - 1); !errors.As(err, &se) || se.Limit != e.Size()-1 {
		t.Fatalf("one over: %v", err)
	}
	// Extensions count towards the size.
	e.Extensions["big"] = strings.Repeat("x", 1000)
	if err := e.Validate(e.Size() - 1); !errors.As(err, &se) {
		t.Fatalf("extensions: %v", err)
	}
	// Up to 1 MiB of payload with the default limit is fine.
	e = fullEvent()
	e.Data = make([]byte, 1<<20)
	if err := e.Validate(0); err != nil {
		t.Fatal(err)
	}
}

func TestValidExtensionName(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"traceparent": true, "a": true, "x9": true, "abcdefghijklmnopqrst": true,
		"": false, "Trace": false, "trace_id": false, "trace-id": false, "é": false, "abcdefghijklmnopqrstu": false,
		"id": false, "source": false, "specversion": false, "type": false, "subject": false, "time": false,
		"datacontenttype": false, "dataschema": false, "data": false, "data_base64": false, "dataversion": false,
	} {
		if got := eventkit.ValidExtensionName(name); got != want {
			t.Errorf("ValidExtensionName(%q) = %v", name, got)
		}
	}
}
