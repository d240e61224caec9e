package eventkit_test

import (
	"errors"
	"fmt"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/eventkitpb/examplepb"
)

// OrderCreated is the JSON payload of the event "order.created", version 1.
type OrderCreated struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	TotalCents int64  `json:"total_cents"`
	Currency   string `json:"currency"`
}

// A producer and a consumer share a registry of event types. The producer
// builds an event from a Go value; the consumer decodes it back into the Go
// type registered for the event's type and version.
func ExampleRegister() {
	reg := eventkit.NewRegistry()
	eventkit.MustRegister[OrderCreated](reg, "order.created", "1", eventkit.JSON)

	// Producer.
	ev, err := eventkit.NewTyped(reg, OrderCreated{OrderID: "o-42", CustomerID: "c-7", TotalCents: 2599, Currency: "EUR"},
		eventkit.WithSubject("o-42"), eventkit.WithSource("/orders"))
	if err != nil {
		panic(err)
	}
	fmt.Println(ev.Type, ev.DataVersion, ev.DataContentType, ev.Subject)
	fmt.Println(string(ev.Data))

	// Consumer, after the event went through a broker.
	order, err := eventkit.Decode[OrderCreated](reg, ev)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", order)

	// Or without knowing the type in advance:
	v, _ := reg.Decode(ev)
	switch p := v.(type) {
	case OrderCreated:
		fmt.Println("order", p.OrderID, "for", p.TotalCents, p.Currency)
	}
	// Output:
	// order.created 1 application/json o-42
	// {"order_id":"o-42","customer_id":"c-7","total_cents":2599,"currency":"EUR"}
	// {OrderID:o-42 CustomerID:c-7 TotalCents:2599 Currency:EUR}
	// order o-42 for 2599 EUR
}

// Payloads can be protobuf messages: register the generated message pointer
// type with the Protobuf codec. Here the whole event also travels in the
// CloudEvents protobuf format, which any CloudEvents SDK can read.
func ExampleRegister_protobuf() {
	reg := eventkit.NewRegistry()
	eventkit.MustRegister[*examplepb.OrderCreated](reg, "shop.order.created", "1", eventkit.Protobuf,
		eventkit.SchemaURI("type.googleapis.com/eventkit.example.v1.OrderCreated"))

	ev, err := eventkit.NewTyped(reg, &examplepb.OrderCreated{
		OrderId: "o-42", CustomerId: "c-7", ProductSku: "MUG-1", ProductName: "Coffee mug",
		Quantity: 2, UnitPriceCents: 1250, Currency: "EUR",
	}, eventkit.WithSubject("o-42"))
	if err != nil {
		panic(err)
	}
	wire, err := eventkit.MarshalProto(ev) // content type application/cloudevents+protobuf
	if err != nil {
		panic(err)
	}

	received, err := eventkit.DecodeProto(wire)
	if err != nil {
		panic(err)
	}
	order, err := eventkit.Decode[*examplepb.OrderCreated](reg, received)
	if err != nil {
		panic(err)
	}
	fmt.Println(received.Type, received.DataContentType, received.DataSchema)
	fmt.Println(order.GetProductName(), order.GetQuantity(), "x", order.GetUnitPriceCents(), order.GetCurrency())
	// Output:
	// shop.order.created application/protobuf type.googleapis.com/eventkit.example.v1.OrderCreated
	// Coffee mug 2 x 1250 EUR
}

// A consumer never decodes a payload it does not know into the wrong type:
// an unknown type or version is a permanent error, so the consumer runtime
// dead-letters the event instead of retrying it.
func ExampleDecode_unknownVersion() {
	reg := eventkit.NewRegistry()
	eventkit.MustRegister[OrderCreated](reg, "order.created", "1", eventkit.JSON)

	ev := eventkit.New("order.created", "application/json", []byte(`{"order_id":"o-1","lines":[]}`),
		eventkit.WithDataVersion("2"))
	_, err := eventkit.Decode[OrderCreated](reg, ev)
	fmt.Println(errors.Is(err, eventkit.ErrUnsupportedVersion), eventkit.IsPermanent(err))

	var de *eventkit.DecodeError
	if errors.As(err, &de) {
		fmt.Printf("dead-letter %d bytes: %v\n", len(de.Raw), de.Err)
	}
	// Output:
	// true true
	// dead-letter 29 bytes: eventkit: unsupported event version: type "order.created" version "2" (registered versions: "1")
}

// An event in the CloudEvents protobuf format and back.
func ExampleMarshalProto() {
	ev := eventkit.New("order.created", "application/json", []byte(`{"order_id":"o-1"}`),
		eventkit.WithID("id-1"), eventkit.WithSource("/orders"), eventkit.WithSubject("o-1"),
		eventkit.WithExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	b, err := eventkit.MarshalProto(ev)
	if err != nil {
		panic(err)
	}
	back, err := eventkit.DecodeProto(b)
	if err != nil {
		panic(err)
	}
	fmt.Println(back.ID, back.Type, back.Subject, back.Extension("traceparent"), string(back.Data))
	fmt.Println(back.Time.Equal(ev.Time))
	// Output:
	// id-1 order.created o-1 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 {"order_id":"o-1"}
	// true
}
