// Package interop checks eventkit's CloudEvents encodings against the
// official Go SDK (github.com/cloudevents/sdk-go/v2), both ways: structured
// JSON, the Protobuf format, the NATS binding through a real JetStream
// server and the Kafka binding through kfake. Every attribute and the data
// bytes are compared; where the SDK and the specification differ, the tests
// pin eventkit's documented behaviour (docs/cloudevents.md).
//
// It is a separate module so that the SDK and its dependencies never enter
// eventkit's own go.mod. Run it from this directory with go test ./...
package interop
