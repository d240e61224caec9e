package adapterkit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

func TestCheckProvision(t *testing.T) {
	if err := adapterkit.CheckProvision("t", []string{"g1", "g2"}, false); err != nil {
		t.Fatalf("valid, open: %v", err)
	}
	if err := adapterkit.CheckProvision("t", nil, true); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("closed: %v, want ErrClosed", err)
	}
	// Names are checked first, even on a closed broker.
	if err := adapterkit.CheckProvision("", nil, true); !errors.Is(err, broker.ErrInvalidTopic) {
		t.Fatalf("empty topic: %v, want ErrInvalidTopic", err)
	}
	err := adapterkit.CheckProvision("t", []string{"g", ""}, true)
	if err == nil || errors.Is(err, broker.ErrClosed) || err.Error() != broker.ValidateName("group", "").Error() {
		t.Fatalf("empty group: %v, want %v", err, broker.ValidateName("group", ""))
	}
}

func TestCheckSubscribe(t *testing.T) {
	h := func(context.Context, broker.Delivery) error { return nil }
	if err := adapterkit.CheckSubscribe("t", "g", h, "x"); err != nil {
		t.Fatalf("valid: %v", err)
	}
	if err := adapterkit.CheckSubscribe("", "g", nil, "x"); err == nil || err.Error() != broker.ValidateName("topic", "").Error() {
		t.Fatalf("empty topic, nil handler: %v, want the topic error first", err)
	}
	if err := adapterkit.CheckSubscribe("t", "a b", nil, "x"); err == nil || err.Error() != broker.ValidateName("group", "a b").Error() {
		t.Fatalf("bad group, nil handler: %v, want the group error first", err)
	}
	if err := adapterkit.CheckSubscribe("t", "g", nil, "memory"); err == nil || err.Error() != "memory: nil handler" {
		t.Fatalf("nil handler: %v", err)
	}
}

// Every size error of the result names the limit; the other failures are
// as ValidateEvents makes them.
func TestValidateEventsAt(t *testing.T) {
	small := eventkit.New("t.x", "text/plain", []byte("a"))
	big := eventkit.New("t.x", "text/plain", make([]byte, 2000))
	big2 := eventkit.New("t.x", "text/plain", make([]byte, 3000))
	if err := adapterkit.ValidateEventsAt("top", 1000, "here", []eventkit.Event{small}); err != nil {
		t.Fatalf("valid: %v", err)
	}
	err := adapterkit.ValidateEventsAt("top", 1000, "here", []eventkit.Event{big, small, big2})
	var pe *broker.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != 3 || pe.Topic != "top" {
		t.Fatalf("got %v", err)
	}
	for _, i := range []int{0, 2} {
		var se *eventkit.SizeError
		if !errors.As(pe.Failed[i].Err, &se) || se.Where != "here" || se.Limit != 1000 {
			t.Fatalf("event %d: %v (%+v), want a size error naming here", i, pe.Failed[i].Err, se)
		}
	}
	if !errors.Is(pe.Failed[1].Err, broker.ErrNotSent) {
		t.Fatalf("valid event of the call: %v, want ErrNotSent", pe.Failed[1].Err)
	}
}
