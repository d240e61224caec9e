package redisbroker

import "github.com/eventkit/eventkit"

// DecodeEntry decodes a stream entry's fields (as XRANGE returns them) into
// the event Publish wrote; an entry that is not an event gives an error.
// Readers such as package audit use it to read a stream without a group.
func DecodeEntry(values map[string]any) (eventkit.Event, error) { return decodeEntry(values) }
