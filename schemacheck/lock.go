package schemacheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/asyncapi"
)

// FormatVersion is the version of the lock file format this package writes
// and reads.
const FormatVersion = 1

// DefaultLockFile is the lock file the commands read and write unless told
// otherwise.
const DefaultLockFile = "eventkit.schema.json"

// ErrBadLock is wrapped by the *LockError that Decode and ReadFile return for
// a lock file that is not one (not JSON, unknown keys, another format
// version, a missing or duplicate registration, an invalid descriptor).
var ErrBadLock = errors.New("schemacheck: bad lock file")

// A LockError says why a lock file cannot be read. It wraps ErrBadLock and,
// where there is one, the underlying error (a *json.SyntaxError, an
// fs.ErrNotExist).
type LockError struct {
	Path string // the file, or "" when decoding bytes
	Err  error
}

func (e *LockError) Error() string {
	if e.Path == "" {
		return "schemacheck: bad lock file: " + e.Err.Error()
	}
	return fmt.Sprintf("schemacheck: bad lock file %s: %v", e.Path, e.Err)
}

// Unwrap returns ErrBadLock and the cause.
func (e *LockError) Unwrap() []error { return []error{ErrBadLock, e.Err} }

// A Lock is the recorded contract of a registry: one Entry per registered
// (event type, data version), sorted, plus the (type or type@version) names
// declared retired.
type Lock struct {
	Format  int      `json:"eventkit_schema_lock"`
	Types   []Entry  `json:"types"`
	Retired []string `json:"retired"`
}

// An Entry is one registration: its codec's content type and the schema of
// its payload — the message descriptor for Protobuf types, the JSON Schema
// of what encoding/json writes for JSON codecs, neither for other codecs.
type Entry struct {
	Type        string         `json:"type"`
	Version     string         `json:"version"`
	ContentType string         `json:"content_type"`
	GoType      string         `json:"go_type"`              // informational, never compared
	UpcastTo    *string        `json:"upcast_to"`            // the version an upcaster converts this one to
	JSONSchema  map[string]any `json:"json_schema,omitzero"` // nil: no schema; {} (any value) is kept
	Protobuf    *Proto         `json:"protobuf,omitempty"`
}

// key names an entry in findings: "order.created version 1".
func (e *Entry) key() string { return e.Type + " version " + e.Version }

// An Option changes what Snapshot records.
type Option func(*config)

type config struct{ retired []string }

// Retired declares event types ("order.legacy") or single versions
// ("order.created@1") retired: Compare accepts that they are no longer
// registered. The names are written to the lock file's "retired" list.
func Retired(names ...string) Option {
	return func(c *config) { c.retired = append(c.retired, names...) }
}

// Snapshot records every registration of reg (nil: eventkit.DefaultRegistry).
// It fails for a JSON-codec Go type that encoding/json cannot encode.
func Snapshot(reg *eventkit.Registry, opts ...Option) (*Lock, error) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	l := &Lock{Format: FormatVersion, Types: []Entry{}, Retired: []string{}}
	for _, ti := range reg.Types() {
		e := Entry{Type: ti.Type, Version: ti.Version, ContentType: ti.ContentType, GoType: ti.GoType.String()}
		if ti.UpcastTo != "" {
			to := ti.UpcastTo
			e.UpcastTo = &to
		}
		switch {
		case ti.GoType.Implements(reflect.TypeFor[proto.Message]()) && ti.GoType.Kind() == reflect.Pointer:
			m := reflect.New(ti.GoType.Elem()).Interface().(proto.Message)
			e.Protobuf = DescribeProto(m.ProtoReflect().Descriptor())
		case isJSONMedia(ti.ContentType):
			s, err := asyncapi.JSONSchema(ti.GoType)
			if err != nil {
				return nil, fmt.Errorf("schemacheck: %s: %w", e.key(), err)
			}
			sortRequired(s)
			e.JSONSchema = s
		}
		l.Types = append(l.Types, e)
	}
	for _, r := range c.retired {
		if r == "" || strings.Count(r, "@") > 1 {
			return nil, fmt.Errorf("schemacheck: retired %q: want TYPE or TYPE@VERSION", r)
		}
		if !slices.Contains(l.Retired, r) {
			l.Retired = append(l.Retired, r)
		}
	}
	slices.Sort(l.Retired)
	// Normalise through the encoding, so that a snapshot compares with a
	// decoded lock file value for value (numbers as float64, and so on).
	b, err := l.Encode()
	if err != nil {
		return nil, err
	}
	return Decode(b)
}

// sortRequired sorts every "required" list of s, so that reordering a
// struct's fields does not change the lock file.
func sortRequired(s map[string]any) {
	for k, v := range s {
		switch x := v.(type) {
		case map[string]any:
			sortRequired(x)
		case []any:
			if k == "required" {
				slices.SortFunc(x, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
			}
			for _, e := range x {
				if m, ok := e.(map[string]any); ok {
					sortRequired(m)
				}
			}
		}
	}
}

func isJSONMedia(ct string) bool {
	mt, _, _ := strings.Cut(strings.ToLower(ct), ";")
	mt = strings.TrimSpace(mt)
	return mt == "" || mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// Encode returns the lock file's bytes: indented JSON, entries sorted by
// type and version, object keys sorted, ending in a newline, so that equal
// registries give equal files and a change is a readable diff.
func (l *Lock) Encode() ([]byte, error) {
	c := *l
	c.Types = slices.Clone(l.Types)
	slices.SortFunc(c.Types, func(a, b Entry) int {
		if d := strings.Compare(a.Type, b.Type); d != 0 {
			return d
		}
		return compareVersions(a.Version, b.Version)
	})
	if c.Types == nil {
		c.Types = []Entry{}
	}
	if c.Retired == nil {
		c.Retired = []string{}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&c); err != nil {
		return nil, fmt.Errorf("schemacheck: encode lock: %w", err)
	}
	return b.Bytes(), nil
}

// Decode reads a lock file. Every error is a *LockError (wrapping
// ErrBadLock): the bytes are one JSON object of format FormatVersion with
// no unknown keys, each (type, version) once, each entry with a type, a
// content type and at most one schema, and each Protobuf descriptor valid
// (see Proto).
func Decode(data []byte) (*Lock, error) {
	l, err := decode(data)
	if err != nil {
		return nil, &LockError{Err: err}
	}
	return l, nil
}

func decode(data []byte) (*Lock, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var l Lock
	if err := dec.Decode(&l); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	if l.Format != FormatVersion {
		return nil, fmt.Errorf("eventkit_schema_lock is %d, want %d (missing, or written by another eventkit version)", l.Format, FormatVersion)
	}
	seen := map[[2]string]bool{}
	for i := range l.Types {
		e := &l.Types[i]
		k := [2]string{e.Type, e.Version}
		switch {
		case e.Type == "":
			return nil, fmt.Errorf("types[%d]: no type", i)
		case e.ContentType == "":
			return nil, fmt.Errorf("%s: no content_type", e.key())
		case seen[k]:
			return nil, fmt.Errorf("%s: listed twice", e.key())
		case e.JSONSchema != nil && e.Protobuf != nil:
			return nil, fmt.Errorf("%s: both json_schema and protobuf", e.key())
		}
		seen[k] = true
		if e.Protobuf != nil {
			if err := e.Protobuf.validate(); err != nil {
				return nil, fmt.Errorf("%s: protobuf: %w", e.key(), err)
			}
		}
	}
	if l.Types == nil {
		l.Types = []Entry{}
	}
	if l.Retired == nil {
		l.Retired = []string{}
	}
	return &l, nil
}

// ReadFile reads and decodes the lock file at path. Every error is a
// *LockError naming the path (a missing file wraps fs.ErrNotExist).
func ReadFile(path string) (*Lock, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &LockError{Path: path, Err: err}
	}
	l, err := decode(b)
	if err != nil {
		return nil, &LockError{Path: path, Err: err}
	}
	return l, nil
}

// WriteFile writes l to path ("-": w), replacing the file atomically.
func WriteFile(path string, l *Lock, w io.Writer) error {
	b, err := l.Encode()
	if err != nil {
		return err
	}
	if path == "-" {
		_, err := w.Write(b)
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
