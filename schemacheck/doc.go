// Package schemacheck makes schema evolution a CI gate: Snapshot records
// the event types of an eventkit.Registry (type, data version, codec, and
// the payload's Protobuf descriptor or the JSON Schema of its Go type) in a
// lock file to commit, and Compare reports every change to a recorded
// (type, version) that would break a reader of events already written or
// of events still to come, by rule. Raising the data version is how a
// payload changes incompatibly: a new version is never a finding, and the
// old one stays registered (with an upcaster, see
// eventkit.RegisterUpcaster) to read the backlog.
//
// Protobuf payloads follow buf's WIRE_JSON category (the events' payloads
// are read in binary and, in the CloudEvents JSON format and by JSON tools,
// as protojson): FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED and
// FIELD_NO_DELETE_UNLESS_NAME_RESERVED (a field deleted or renumbered
// without reserving it), FIELD_SAME_NAME and FIELD_SAME_JSON_NAME (a number
// reused or a field renamed), FIELD_WIRE_JSON_COMPATIBLE_TYPE (a kind or
// message/enum type changed, except int32/int64, uint32/uint64 and
// sint32/sint64), FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY (singular to
// repeated or back), MESSAGE_SAME_REQUIRED_FIELDS (a required label added
// or removed), FIELD_SAME_ONEOF, ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED,
// ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED and ENUM_VALUE_SAME_NAME (an
// enum value deleted or its number reused), RESERVED_MESSAGE_NO_DELETE and
// RESERVED_ENUM_NO_DELETE, and MESSAGE_NO_DELETE for a renamed payload
// message. JSON payloads follow eventkit's rules in the same style:
// JSON_PROPERTY_NO_DELETE, JSON_PROPERTY_SAME_TYPE (type, format, content
// encoding, bounds; making a property nullable is allowed),
// JSON_REQUIRED_NO_ADD (a new field without omitempty or omitzero is
// required, and old events lack it) and JSON_ENUM_VALUE_NO_DELETE.
// Registrations: TYPE_NO_DELETE and VERSION_NO_DELETE (unless retired with
// the Retired option), CONTENT_TYPE_SAME, and, on request, UPCASTER_MISSING.
//
// Command and Main run the `snapshot` and `check` commands with the flags of
// `eventkit schema`, on any registry: the eventkit command checks the demo
// services' registry; a small main package in your repository calling Main
// checks yours (see the example and docs/schema.md).
//
// Limits: proto2 defaults, extensions and field options (packed, json
// formats) are not recorded; a Go type with its own MarshalJSON is "any
// value" to the JSON rules; codecs other than JSON and Protobuf are checked
// for their content type only.
package schemacheck
