package adapterkit_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

func TestCheckSize(t *testing.T) {
	body := bytes.Repeat([]byte("b"), 10_000)
	small := map[string]string{"ce-id": "x1"}
	big := map[string]string{"h": strings.Repeat("v", 5000)}

	// At the limit plus the allowance: accepted.
	n := adapterkit.MessageSize(body, small)
	if err := adapterkit.CheckSize("f", "x1", body, small, n, len(small), n-adapterkit.Allowance(len(small)), "w"); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if err := adapterkit.CheckSize("f", "x1", body, small, n, len(small), 0, "w"); err != nil {
		t.Fatalf("no limit: %v", err)
	}
	// One byte over: refused, typed, truncated, small headers kept.
	err := adapterkit.CheckSize("f", "x1", body, small, n, len(small), n-adapterkit.Allowance(len(small))-1, "w")
	var de *eventkit.DecodeError
	var se *eventkit.SizeError
	if !errors.As(err, &de) || !errors.As(err, &se) || !errors.Is(err, eventkit.ErrTooLarge) ||
		!errors.Is(err, eventkit.ErrDecode) || !eventkit.IsPermanent(err) {
		t.Fatalf("over the limit: %T %v", err, err)
	}
	if se.Size != n || se.ID != "x1" || !strings.Contains(se.Where, "on consume") {
		t.Fatalf("size error %+v", se)
	}
	if len(de.Raw) != adapterkit.TooLargeKeep || !bytes.Equal(de.Raw, body[:adapterkit.TooLargeKeep]) || de.Headers["ce-id"] != "x1" {
		t.Fatalf("decode error keeps %d bytes, headers %v", len(de.Raw), de.Headers)
	}
	de.Raw[0] = 'X' // a copy: the message is not pinned
	if body[0] != 'b' {
		t.Fatal("Raw shares the body")
	}
	// Large headers are dropped whole.
	err = adapterkit.CheckSize("f", "", body, big, adapterkit.MessageSize(body, big), len(big), 100, "w")
	if !errors.As(err, &de) || de.Headers != nil {
		t.Fatalf("large headers kept: %v", err)
	}
}
