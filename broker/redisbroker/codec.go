package redisbroker

import (
	"encoding/json"
	"errors"
	"fmt"
	"iter"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

// DataField is the stream entry field that holds the event's payload. The
// attributes are the fields of eventkit.RedisBinding ("ce_id", "ce_type",
// ..., "content-type").
const DataField = "data"

var binding = eventkit.RedisBinding

// Field names of eventkit.RedisBinding, as constants so that encoding an
// event does not build them again for every entry.
const (
	fSpecVersion = "ce_specversion"
	fID          = "ce_id"
	fSource      = "ce_source"
	fType        = "ce_type"
	fTime        = "ce_time"
	fSubject     = "ce_subject"
	fDataVersion = "ce_dataversion"
	fDataSchema  = "ce_dataschema"
	fContentType = "content-type"
)

// encode returns the field-value list of the stream entry for e: the
// headers eventkit.RedisBinding.Headers gives (TestEncodeMatchesBinding
// keeps the two equal), then DataField.
func encode(e eventkit.Event) []any {
	vals := make([]any, 0, 2*(binding.HeaderCount(e)+1))
	vals = append(vals, fSpecVersion, eventkit.SpecVersion, fID, e.ID, fSource, e.Source, fType, e.Type)
	if !e.Time.IsZero() {
		vals = append(vals, fTime, e.Time.UTC().Format(eventkit.TimeFormat))
	}
	if e.Subject != "" {
		vals = append(vals, fSubject, e.Subject)
	}
	if e.DataVersion != "" {
		vals = append(vals, fDataVersion, e.DataVersion)
	}
	if e.DataSchema != "" {
		vals = append(vals, fDataSchema, e.DataSchema)
	}
	if e.DataContentType != "" {
		vals = append(vals, fContentType, e.DataContentType)
	}
	for k, v := range e.Extensions {
		vals = append(vals, binding.Prefix+k, v)
	}
	data := e.Data
	if data == nil {
		data = []byte{}
	}
	return append(vals, DataField, data)
}

// fieldString returns a field value as go-redis returned it, as a string.
func fieldString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// attrs iterates over the fields of an entry other than DataField.
func attrs(values map[string]any) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for k, v := range values {
			if k == DataField {
				continue
			}
			if !yield(k, fieldString(v)) {
				return
			}
		}
	}
}

// errNoData is the reason given for an entry without a data field that is
// not a CloudEvent either.
var errNoData = errors.New("entry has no " + DataField + " field")

// decodeEntry turns a stream entry into an event. An entry that is not an
// event (written by another tool, garbage, missing attributes) gives a
// *eventkit.DecodeError whose Raw is the data field, or, when that is
// missing or empty, a JSON object of all the entry's fields; Headers holds
// the other fields. It never panics.
func decodeEntry(values map[string]any) (eventkit.Event, error) {
	raw, hasData := values[DataField]
	var body []byte
	if hasData {
		body = []byte(fieldString(raw))
	}
	ev, err := binding.Decode(attrs(values), "", body)
	if err != nil {
		var de *eventkit.DecodeError
		if !errors.As(err, &de) {
			de = &eventkit.DecodeError{Format: binding.Name + " binary", Raw: body, Err: err}
		}
		de.Format = "redis stream entry"
		if len(de.Raw) == 0 {
			de.Raw = dumpFields(values)
		}
		if !hasData {
			de.Err = fmt.Errorf("%w; %w", errNoData, de.Err)
		}
		return eventkit.Event{}, de
	}
	if len(ev.Data) == 0 {
		ev.Data = nil
	}
	return ev, nil
}

// checkEntrySize refuses an entry whose fields (names and values) are over
// limit (Options.MaxPayload): a *eventkit.DecodeError wrapping a
// *eventkit.SizeError, keeping at most adapterkit.TooLargeKeep bytes of the data
// field and the other fields only if they are small (see adapterkit.CheckSize).
// The client has read the whole entry already (the reply is parsed whole);
// the server's proto-max-bulk-len bounds one value.
func checkEntrySize(values map[string]any, limit int) error {
	n := 0
	for k, v := range values {
		n += len(k) + len(fieldString(v))
	}
	if limit <= 0 || n <= limit+adapterkit.Allowance(len(values)) {
		return nil
	}
	data := fieldString(values[DataField])
	var hs map[string]string
	if n-len(data) <= 4<<10 {
		hs = make(map[string]string, len(values))
		for k, v := range values {
			if k != DataField {
				hs[k] = fieldString(v)
			}
		}
	}
	id, _ := values[binding.Prefix+"id"].(string)
	body := []byte(data[:min(len(data), adapterkit.TooLargeKeep)]) // not a copy of the whole value
	return adapterkit.CheckSize("redis stream entry", id, body, hs, n, len(values), limit, "redis broker Options.MaxPayload")
}

// dumpFields renders an entry's fields as a JSON object with sorted keys.
func dumpFields(values map[string]any) []byte {
	m := make(map[string]string, len(values))
	for k, v := range values {
		m[k] = fieldString(v)
	}
	out, err := json.Marshal(m) // encoding/json sorts map keys
	if err != nil || len(values) == 0 {
		return []byte("{}")
	}
	return out
}

// pairsToMap turns a flat field-value list (as Lua scripts return it) into a
// map like the one go-redis builds for XREADGROUP.
func pairsToMap(v any) map[string]any {
	list, _ := v.([]any)
	m := make(map[string]any, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		m[fieldString(list[i])] = list[i+1]
	}
	return m
}
