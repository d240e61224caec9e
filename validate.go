package eventkit

import (
	"unicode/utf8"
)

// Validate checks that e can be published: the required attributes (id, type,
// source, time) are set, strings are valid UTF-8, extension names follow
// CloudEvents (lower-case a-z and 0-9, not a reserved attribute) and the event
// is at most maxSize bytes (DefaultMaxSize if maxSize <= 0). The error wraps
// ErrInvalidEvent and is a *ValidationError or *SizeError.
func (e Event) Validate(maxSize int) error {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	bad := func(field, reason string) error { return &ValidationError{ID: e.ID, Field: field, Reason: reason} }
	switch {
	case e.ID == "":
		return bad("id", "must not be empty")
	case e.Type == "":
		return bad("type", "must not be empty")
	case e.Source == "":
		return bad("source", "must not be empty")
	case e.Time.IsZero():
		return bad("time", "must be set")
	}
	for _, f := range [...]struct{ name, v string }{
		{"id", e.ID}, {"type", e.Type}, {"source", e.Source}, {"subject", e.Subject},
		{"dataversion", e.DataVersion}, {"datacontenttype", e.DataContentType}, {"dataschema", e.DataSchema},
	} {
		if !utf8.ValidString(f.v) {
			return bad(f.name, "is not valid UTF-8")
		}
		if len(f.v) > 1024 {
			return bad(f.name, "is longer than 1024 bytes")
		}
		if hasControl(f.v) {
			return bad(f.name, "contains a control character")
		}
	}
	for k, v := range e.Extensions {
		if !ValidExtensionName(k) {
			return bad("extensions["+k+"]", "name must be 1-20 lower-case letters or digits and not a CloudEvents attribute")
		}
		if !utf8.ValidString(v) || hasControl(v) {
			return bad("extensions["+k+"]", "value must be valid UTF-8 without control characters")
		}
	}
	if n := e.Size(); n > maxSize {
		return &SizeError{ID: e.ID, Size: n, Limit: maxSize, Where: "eventkit max event size"}
	}
	return nil
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// reserved are the attribute names an extension may not take.
var reserved = map[string]bool{
	"id": true, "source": true, "specversion": true, "type": true, "subject": true, "time": true,
	"datacontenttype": true, "dataschema": true, "data": true, "data_base64": true, "dataversion": true,
}

// ValidExtensionName reports whether name is a valid CloudEvents extension
// attribute name that eventkit does not use itself.
func ValidExtensionName(name string) bool {
	if name == "" || len(name) > 20 || reserved[name] {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
