package sqldialect

import (
	"fmt"
	"strings"
)

// Ident are the rules for one kind of name eventkit puts into SQL text.
type Ident struct {
	// MaxLen is the longest part (PostgreSQL identifiers have at most 63
	// bytes; a table that gets suffixes such as _subject_seq needs room
	// for them).
	MaxLen int
	// Schema allows "schema.table".
	Schema bool
}

// Table is the rule for the tables of the inbox, the dead-letter store and
// the audit: 63 bytes, optionally schema-qualified.
var Table = Ident{MaxLen: 63, Schema: true}

// Column is the rule for a column name.
var Column = Ident{MaxLen: 63}

// Check returns a message saying what is wrong with name, or "" when it
// is a plain SQL identifier under the rules: letters, digits and '_', not
// starting with a digit, at most MaxLen bytes per part. Names that pass
// need no quoting in any dialect. Callers wrap the message in their own
// sentinel error (outbox.ErrInvalidTable, sqlinbox.ErrInvalidTable).
func (r Ident) Check(name string) string {
	parts := []string{name}
	if r.Schema {
		if a, b, ok := strings.Cut(name, "."); ok {
			parts = []string{a, b}
		}
	}
	for _, p := range parts {
		if !plain(p, r.MaxLen) {
			return r.want()
		}
	}
	return ""
}

func (r Ident) want() string {
	if r.Schema {
		return "want letters, digits and '_', optionally schema.table"
	}
	return "want letters, digits and '_'"
}

// Err returns nil if name passes Check, else an error wrapping sentinel:
// `sentinel: "name" (want ...)`.
func (r Ident) Err(sentinel error, name string) error {
	if msg := r.Check(name); msg != "" {
		return fmt.Errorf("%w: %q (%s)", sentinel, name, msg)
	}
	return nil
}

func plain(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
