package eventkit

import (
	"fmt"
	"time"
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
