package eventkit

// Helpers of the decoders and encoders in event.go, binding.go,
// structured.go and envelope_proto.go.

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// parseTime parses a time attribute (RFC 3339, TimeFormat) as the decoders
// read it, in UTC. It rejects an instant whose UTC form falls outside the
// years 0000 to 9999 ("9999-12-31T23:59:59-01:00"): RFC 3339 cannot write it,
// so the event could not be encoded again.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(TimeFormat, s)
	if err != nil {
		return time.Time{}, err
	}
	t = t.UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return time.Time{}, fmt.Errorf("%q is outside the years 0000 to 9999 in UTC", s)
	}
	return t, nil
}

// unmarshalJSONString decodes the JSON value raw into dst as json.Unmarshal
// does, without its allocations for the common case of a plain quoted string
// (no escapes, valid UTF-8).
func unmarshalJSONString(raw []byte, dst *string) error {
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' {
		inner := raw[1 : n-1]
		plain := true
		for _, c := range inner {
			if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
				plain = false
				break
			}
		}
		if plain {
			*dst = string(inner)
			return nil
		}
	}
	return json.Unmarshal(raw, dst)
}

// jsonMember is one member of a JSON object: its decoded name and raw value.
type jsonMember struct{ name, value []byte }

// The helpers below scan JSON that json.Valid has accepted; on such input
// they cannot go wrong, and they never read past the end of it.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the JSON value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		for i++; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i + 1
			}
		}
		return len(b)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			case '"':
				i = skipValue(b, i) - 1
			}
		}
		return len(b)
	default: // number, true, false, null
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
		}
		return len(b)
	}
}

// jsonMemberName decodes a member name (a JSON string) as json.Unmarshal
// does for map keys, without allocating when it has no escapes.
func jsonMemberName(raw []byte) ([]byte, error) {
	inner := raw[1 : len(raw)-1]
	for _, c := range inner {
		if c == '\\' || c >= utf8.RuneSelf {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, err
			}
			return []byte(s), nil
		}
	}
	return inner, nil
}

func jsonKind(c byte) string {
	switch c {
	case '"':
		return "string"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	default:
		return "number"
	}
}

// headerNames are the header names Binding.Headers writes for one prefix.
type headerNames struct {
	specversion, id, source, typ, time, subject, dataversion, dataschema, datacontenttype string
}

func newHeaderNames(p string) *headerNames {
	return &headerNames{
		specversion: p + "specversion", id: p + "id", source: p + "source", typ: p + "type",
		time: p + "time", subject: p + "subject", dataversion: p + "dataversion", dataschema: p + "dataschema",
		datacontenttype: p + "datacontenttype",
	}
}

// stdHeaderNames holds the names for the prefixes of the standard bindings.
var stdHeaderNames = map[string]*headerNames{
	NATSBinding.Prefix:           newHeaderNames(NATSBinding.Prefix),
	KafkaBinding.Prefix:          newHeaderNames(KafkaBinding.Prefix),
	AMQPBinding.Prefix:           newHeaderNames(AMQPBinding.Prefix),
	AMQPUnderscoreBinding.Prefix: newHeaderNames(AMQPUnderscoreBinding.Prefix),
}

func headerNamesFor(prefix string) *headerNames {
	if n := stdHeaderNames[prefix]; n != nil {
		return n
	}
	return newHeaderNames(prefix)
}
