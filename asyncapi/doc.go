// Package asyncapi describes event-driven services as AsyncAPI 3.0
// documents generated from the event type registry. Guarantee: the document
// cannot drift from what the code sends: every event type and data version a
// service publishes or consumes becomes a message whose headers are the
// CloudEvents attributes exactly as the chosen eventkit.Binding writes them
// and whose payload schema is derived from the registered Go type; the
// generated documents pass the official AsyncAPI parser (@asyncapi/parser),
// and the tests check that, and that the headers and payloads eventkit
// actually writes conform to the schemas.
//
// Payload schemas come from the Go type by reflection, as encoding/json
// writes it, for JSON codecs, and from the message descriptor, in its
// protojson form, for Protobuf types. Package asyncapitest lets your tests
// run the same checks on your own services' documents.
//
// A Service lists the topics it publishes to (send operations) and the
// topics its consumer routes read (receive operations), each with the
// event types carried there:
//
//	doc, err := asyncapi.Document(asyncapi.Service{
//		Name:       "orders",
//		Registry:   reg,
//		Publishes:  []asyncapi.Channel{{Topic: "orders", Types: []string{"order.created"}}},
//		Subscribes: []asyncapi.Channel{{Topic: "inventory", Types: []string{"inventory.reserved"}}},
//	})
//	yaml, err := doc.YAML()
//
// Limits: the document describes binary content mode (structured mode puts
// the same attributes in the body); a Go type with its own MarshalJSON, an
// interface field or a recursive reference is described by the empty
// schema; payloads of codecs other than JSON and Protobuf have no schema.
// `eventkit asyncapi` prints the documents of the demo services; see
// docs/asyncapi.md.
package asyncapi
