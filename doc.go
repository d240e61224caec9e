// Package eventkit is the event contract shared by every part of the toolkit:
// the Event envelope, its validation, its CloudEvents 1.0 mapping, codecs for
// typed payloads and a registry of event types. Guarantees: New gives every
// event a UUIDv7 id (unique and time-ordered); Validate rejects an event that
// no broker should carry with an error that wraps ErrInvalidEvent and names
// the field; decoders never panic on input and return a *DecodeError that
// keeps the raw bytes.
//
// An Event carries the CloudEvents 1.0 attributes (id, source, type, subject,
// time, datacontenttype, dataschema), a schema version (the "dataversion"
// extension), the payload bytes and string extensions (trace context,
// correlation and causation ids). Every broker adapter maps it onto its
// protocol binding in binary content mode (see Binding); structured JSON mode
// (application/cloudevents+json) is Event.MarshalJSON. So a consumer written in
// any language with a CloudEvents SDK can read what eventkit publishes.
package eventkit
