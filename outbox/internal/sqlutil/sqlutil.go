// Package sqlutil holds what the SQL outbox stores share beyond the dialect
// layer (internal/sqldialect): the outbox table-name rule, embedded
// migrations, leases and the encoding of event fields into columns.
package sqlutil

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/internal/sqldialect"
	"github.com/eventkit/eventkit/outbox"
)

// CheckTable validates a table name ("" means outbox.DefaultTable) and
// returns it. allowSchema permits "schema.table". Parts have at most 51
// bytes, leaving room for the suffixes of the store's other tables
// (_subject_seq, _migrations, ...).
func CheckTable(name string, allowSchema bool) (string, error) {
	if name == "" {
		return outbox.DefaultTable, nil
	}
	if err := (sqldialect.Ident{MaxLen: 51, Schema: allowSchema}).Err(outbox.ErrInvalidTable, name); err != nil {
		return "", err
	}
	return name, nil
}

// Base returns the table name without its schema.
var Base = sqldialect.Base

// Load reads the migrations NNN_name.sql from dir in fsys, in version order,
// with {{table}} replaced by table, {{base}} by its name without schema, and
// {{schema}} by "schema." (or "").
func Load(fsys fs.FS, dir, table string) ([]outbox.Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	base := Base(table)
	schema := strings.TrimSuffix(table, base)
	var ms []outbox.Migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, rest, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("outbox: bad migration file name %q", name)
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, err
		}
		sql := strings.NewReplacer("{{table}}", table, "{{base}}", base, "{{schema}}", schema).Replace(string(b))
		ms = append(ms, outbox.Migration{Version: v, Name: rest, SQL: sql})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

// Statements splits a migration into statements at lines that hold only
// "-- statement" (for drivers that run one statement per call).
func Statements(sql string) []string {
	var out []string
	for _, s := range strings.Split(sql, "\n-- statement\n") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// States merges the known migrations with the applied versions.
func States(ms []outbox.Migration, applied map[int]time.Time) []outbox.MigrationState {
	out := make([]outbox.MigrationState, len(ms))
	for i, m := range ms {
		at, ok := applied[m.Version]
		out[i] = outbox.MigrationState{Version: m.Version, Name: m.Name, Applied: ok, AppliedAt: at}
	}
	return out
}

// TimeText encodes an event time losslessly (UTC, nanoseconds).
func TimeText(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ParseTime decodes TimeText.
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("outbox: bad stored event time %q: %w", s, err)
	}
	return t.UTC(), nil
}

// ExtText encodes extensions as JSON; nil or empty gives nil (SQL NULL).
func ExtText(ext map[string]string) *string {
	if len(ext) == 0 {
		return nil
	}
	b, _ := json.Marshal(ext) // a map[string]string always marshals
	s := string(b)
	return &s
}

// ParseExt decodes ExtText (and PostgreSQL's jsonb text form of it).
func ParseExt(s *string) (map[string]string, error) {
	if s == nil || *s == "" {
		return nil, nil
	}
	if m, ok := parseFlat(*s); ok {
		if len(m) == 0 {
			return nil, nil
		}
		return m, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(*s), &m); err != nil {
		return nil, fmt.Errorf("outbox: bad stored extensions: %w", err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// DecodeRow fills r.Event's time and extensions from their stored text. A
// row that does not decode, or whose columns do not form a valid event
// (outbox.CheckRecord; written by another tool), gives a
// *eventkit.DecodeError, which the relay parks the row with.
func DecodeRow(r *outbox.Record, tm string, ext *string) error {
	var err error
	if r.Event.Time, err = ParseTime(tm); err == nil {
		r.Event.Extensions, err = ParseExt(ext)
	}
	if err != nil {
		raw := []byte(tm)
		if ext != nil {
			raw = append(append(raw, ' '), *ext...)
		}
		return &eventkit.DecodeError{Format: "outbox row", Raw: raw, Err: fmt.Errorf("seq %d: %w", r.Seq, err)}
	}
	return outbox.CheckRecord(r)
}

// parseFlat decodes the common form of stored extensions without
// encoding/json (a quarter of a claim's CPU): a JSON object of string
// values in which no string holds a backslash, a control character or
// invalid UTF-8, with the blanks jsonb puts after ':' and ','. ok is false
// for anything else, which json.Unmarshal then decodes (or rejects) as
// before; for what it accepts the result is json.Unmarshal's. Keys and
// values share s's memory.
func parseFlat(s string) (m map[string]string, ok bool) {
	i := 0
	blank := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	str := func() (string, bool) {
		if i >= len(s) || s[i] != '"' {
			return "", false
		}
		start := i + 1
		for j := start; j < len(s); j++ {
			switch c := s[j]; {
			case c == '"':
				v := s[start:j]
				i = j + 1
				return v, utf8.ValidString(v)
			case c == '\\' || c < 0x20:
				return "", false
			}
		}
		return "", false
	}
	blank()
	if i >= len(s) || s[i] != '{' {
		return nil, false
	}
	i++
	m = make(map[string]string, 2)
	blank()
	if i < len(s) && s[i] == '}' {
		i++
		blank()
		return m, i == len(s)
	}
	for {
		blank()
		k, ok := str()
		if !ok {
			return nil, false
		}
		blank()
		if i >= len(s) || s[i] != ':' {
			return nil, false
		}
		i++
		blank()
		v, ok := str()
		if !ok {
			return nil, false
		}
		m[k] = v
		blank()
		if i >= len(s) {
			return nil, false
		}
		switch s[i] {
		case ',':
			i++
		case '}':
			i++
			blank()
			return m, i == len(s)
		default:
			return nil, false
		}
	}
}

// Script is the SQL text of what Up runs on a database where no migration
// is applied: the version table's DDL, then each migration's statements
// followed by the INSERT recording it. record is that INSERT, with %d for
// the version and %s for the quoted name.
func Script(createVersions string, ms []outbox.Migration, record string) string {
	var b strings.Builder
	b.WriteString(strings.TrimSpace(createVersions) + ";\n")
	for _, m := range ms {
		fmt.Fprintf(&b, "\n-- migration %d: %s\n", m.Version, m.Name)
		for _, stmt := range Statements(m.SQL) {
			b.WriteString(strings.TrimSuffix(stmt, ";") + ";\n")
		}
		fmt.Fprintf(&b, record+";\n", m.Version, "'"+strings.ReplaceAll(m.Name, "'", "''")+"'")
	}
	return b.String()
}
