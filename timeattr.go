package eventkit

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
