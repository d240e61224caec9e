package eventkit_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
)

type customerV1 struct {
	Name string `json:"name"`
}

type customerV2 struct {
	First string `json:"first"`
	Last  string `json:"last"`
}

type customerV3 struct {
	First, Last string
	Tier        string
}

func upcastRegistry(t *testing.T) *eventkit.Registry {
	t.Helper()
	r := eventkit.NewRegistry()
	eventkit.MustRegister[customerV1](r, "customer.created", "1", eventkit.JSON)
	eventkit.MustRegister[customerV2](r, "customer.created", "2", eventkit.JSON)
	eventkit.MustRegister[customerV3](r, "customer.created", "3", eventkit.JSON)
	err := eventkit.RegisterUpcaster(r, "customer.created", "1", "2", func(v customerV1) (customerV2, error) {
		first, last, _ := strings.Cut(v.Name, " ")
		return customerV2{First: first, Last: last}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := eventkit.RegisterUpcaster(r, "customer.created", "2", "3", func(v customerV2) (customerV3, error) {
		return customerV3{First: v.First, Last: v.Last, Tier: "basic"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	return r
}

// Decode[newest] reads every older version through the chain; without an
// upcaster leading to T it still refuses.
func TestUpcastChain(t *testing.T) {
	r := upcastRegistry(t)
	ev, err := eventkit.NewTyped(r, customerV1{Name: "Ada Lovelace"})
	if err != nil || ev.DataVersion != "1" {
		t.Fatal(ev.DataVersion, err)
	}
	got, err := eventkit.Decode[customerV3](r, ev)
	if err != nil || got != (customerV3{First: "Ada", Last: "Lovelace", Tier: "basic"}) {
		t.Fatalf("got %+v, %v", got, err)
	}
	// Downcasting is not a thing: a v3 event is not a v1.
	ev3, _ := eventkit.NewTyped(r, customerV3{First: "A"})
	if _, err := eventkit.Decode[customerV1](r, ev3); !eventkit.IsPermanent(err) {
		t.Fatalf("v3 as v1: %v, want a permanent error", err)
	}
	// Untyped Decode keeps the event's own version.
	if v, err := r.Decode(ev); err != nil || v != (customerV1{Name: "Ada Lovelace"}) {
		t.Fatalf("Registry.Decode: %#v %v", v, err)
	}
}

func TestUpcasterErrors(t *testing.T) {
	r := upcastRegistry(t)
	if err := eventkit.RegisterUpcaster(r, "customer.created", "3", "1", func(customerV3) (customerV1, error) { return customerV1{}, nil }); err == nil {
		t.Fatal("a loop was accepted")
	}
	if err := eventkit.RegisterUpcaster(r, "customer.created", "1", "3", func(customerV1) (customerV3, error) { return customerV3{}, nil }); err == nil {
		t.Fatal("a second upcaster from version 1 was accepted")
	}
	if err := eventkit.RegisterUpcaster(r, "customer.created", "9", "3", func(customerV1) (customerV3, error) { return customerV3{}, nil }); err == nil {
		t.Fatal("an unregistered version was accepted")
	}
	boom := errors.New("boom")
	r2 := eventkit.NewRegistry()
	eventkit.MustRegister[customerV1](r2, "c", "1", eventkit.JSON)
	eventkit.MustRegister[customerV2](r2, "c", "2", eventkit.JSON)
	_ = eventkit.RegisterUpcaster(r2, "c", "1", "2", func(customerV1) (customerV2, error) { return customerV2{}, boom })
	ev, _ := eventkit.NewTyped(r2, customerV1{})
	if _, err := eventkit.Decode[customerV2](r2, ev); !errors.Is(err, boom) || !eventkit.IsPermanent(err) {
		t.Fatalf("failing upcaster: %v", err)
	}
}

// A consumer that routes only the newest version reads v1 events published
// before it was upgraded, through the consumer runtime.
func TestV2OnlyConsumerReadsV1Events(t *testing.T) {
	r := upcastRegistry(t)
	mem := memorybroker.New(memorybroker.Options{})
	defer func() { _ = mem.Close(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := mem.Provision(ctx, "customers", "crm"); err != nil {
		t.Fatal(err)
	}
	// The backlog: written by the old producer.
	for _, name := range []string{"Ada Lovelace", "Alan Turing"} {
		ev, err := eventkit.NewTyped(r, customerV1{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if err := mem.Publish(ctx, "customers", ev); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []customerV3
	done := make(chan struct{})
	router := consumer.NewRouter(r)
	consumer.On(router, "customer.created", func(_ context.Context, v customerV3, _ eventkit.Event) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, v)
		if len(got) == 2 {
			close(done)
		}
		return nil
	})
	c, err := consumer.New(mem, consumer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Handle("customers", "crm", router); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(runCtx) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("v1 events not handled")
	}
	stop()
	<-runErr
	if st := c.Stats(); st.DeadLettered != 0 {
		t.Fatalf("dead-lettered %d", st.DeadLettered)
	}
	if got[0] != (customerV3{"Ada", "Lovelace", "basic"}) || got[1] != (customerV3{"Alan", "Turing", "basic"}) {
		t.Fatalf("got %+v", got)
	}
}
