package schemacheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/eventkitpb/examplepb"
	"github.com/eventkit/eventkit/examples/shop"
)

// snapshotOf registers T as customer.created version 1 and snapshots it.
func snapshotOf[T any](t *testing.T) *Lock {
	t.Helper()
	reg := eventkit.NewRegistry()
	eventkit.MustRegister[T](reg, "customer.created", "1", eventkit.JSON)
	l, err := Snapshot(reg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

type jBase struct {
	ID   string    `json:"id"`
	Qty  int       `json:"qty"`
	Note string    `json:"note,omitempty"`
	Tags []string  `json:"tags"`
	At   time.Time `json:"at"`
	Addr struct {
		City string `json:"city"`
	} `json:"addr"`
}

type jNoQty struct {
	ID   string    `json:"id"`
	Note string    `json:"note,omitempty"`
	Tags []string  `json:"tags"`
	At   time.Time `json:"at"`
	Addr struct {
		City string `json:"city"`
	} `json:"addr"`
}

type jQtyString struct {
	ID   string    `json:"id"`
	Qty  string    `json:"qty"`
	Note string    `json:"note,omitempty"`
	Tags []string  `json:"tags"`
	At   time.Time `json:"at"`
	Addr struct {
		City string `json:"city"`
	} `json:"addr"`
}

type jQtyUint struct {
	ID   string    `json:"id"`
	Qty  uint      `json:"qty"`
	Note string    `json:"note,omitempty"`
	Tags []string  `json:"tags"`
	At   time.Time `json:"at"`
	Addr struct {
		City string `json:"city"`
	} `json:"addr"`
}

type jNewRequired struct {
	ID     string    `json:"id"`
	Qty    int       `json:"qty"`
	Note   string    `json:"note,omitempty"`
	Tags   []string  `json:"tags"`
	At     time.Time `json:"at"`
	Region string    `json:"region"`
	Addr   struct {
		City string `json:"city"`
	} `json:"addr"`
}

type jNoteRequired struct {
	ID   string    `json:"id"`
	Qty  int       `json:"qty"`
	Note string    `json:"note"`
	Tags []string  `json:"tags"`
	At   time.Time `json:"at"`
	Addr struct {
		City string `json:"city"`
	} `json:"addr"`
}

type jTagsInt struct {
	ID   string    `json:"id"`
	Qty  int       `json:"qty"`
	Note string    `json:"note,omitempty"`
	Tags []int     `json:"tags"`
	At   time.Time `json:"at"`
	Addr struct {
		City string `json:"city"`
	} `json:"addr"`
}

type jAtString struct {
	ID   string   `json:"id"`
	Qty  int      `json:"qty"`
	Note string   `json:"note,omitempty"`
	Tags []string `json:"tags"`
	At   string   `json:"at"`
	Addr struct {
		City string `json:"city"`
	} `json:"addr"`
}

type jCityDeleted struct {
	ID   string    `json:"id"`
	Qty  int       `json:"qty"`
	Note string    `json:"note,omitempty"`
	Tags []string  `json:"tags"`
	At   time.Time `json:"at"`
	Addr struct {
		Street string `json:"street,omitempty"`
	} `json:"addr"`
}

type jNewOptional struct {
	ID    string    `json:"id"`
	Qty   int       `json:"qty"`
	Note  string    `json:"note,omitempty"`
	Tags  []string  `json:"tags"`
	At    time.Time `json:"at"`
	Email string    `json:"email,omitempty"`
	Seen  time.Time `json:"seen,omitzero"`
	Addr  struct {
		City string `json:"city"`
	} `json:"addr"`
}

type jReordered struct {
	Addr struct {
		City string `json:"city"`
	} `json:"addr"`
	At   time.Time `json:"at"`
	Tags []string  `json:"tags"`
	Note string    `json:"note,omitempty"`
	Qty  int       `json:"qty"`
	ID   string    `json:"id"`
}

type jQtyPointer struct {
	ID   string    `json:"id"`
	Qty  *int      `json:"qty"`
	Note string    `json:"note,omitempty"`
	Tags []string  `json:"tags"`
	At   time.Time `json:"at"`
	Addr struct {
		City string `json:"city"`
	} `json:"addr"`
}

type jQtyAny struct {
	ID   string    `json:"id"`
	Qty  any       `json:"qty"`
	Note string    `json:"note,omitempty"`
	Tags []string  `json:"tags"`
	At   time.Time `json:"at"`
	Addr struct {
		City string `json:"city"`
	} `json:"addr"`
}

type jQtyOptional struct {
	ID   string    `json:"id"`
	Qty  int       `json:"qty,omitempty"`
	Note string    `json:"note,omitempty"`
	Tags []string  `json:"tags"`
	At   time.Time `json:"at"`
	Addr struct {
		City string `json:"city"`
	} `json:"addr"`
}

// TestJSONRules: each breaking change of a JSON payload's Go type is
// caught under its rule, at its property, and each compatible one passes.
func TestJSONRules(t *testing.T) {
	base := snapshotOf[jBase](t)
	for _, tc := range []struct {
		name string
		cur  *Lock
		want []string
		path string
	}{
		{"unchanged", snapshotOf[jBase](t), nil, ""},
		{"property deleted", snapshotOf[jNoQty](t), []string{ruleJSONPropertyNoDelete}, "qty"},
		{"type changed", snapshotOf[jQtyString](t), []string{ruleJSONPropertySameType}, "qty"},
		{"int to uint (minimum added)", snapshotOf[jQtyUint](t), []string{ruleJSONPropertySameType}, "qty"},
		{"new required property", snapshotOf[jNewRequired](t), []string{ruleJSONRequiredNoAdd}, "region"},
		{"omitempty dropped", snapshotOf[jNoteRequired](t), []string{ruleJSONRequiredNoAdd}, "note"},
		{"type widened to any value", snapshotOf[jQtyAny](t), []string{ruleJSONPropertySameType}, "qty"},
		{"array items type changed", snapshotOf[jTagsInt](t), []string{ruleJSONPropertySameType}, "tags[]"},
		{"format dropped (time to string)", snapshotOf[jAtString](t), []string{ruleJSONPropertySameType}, "at"},
		{"nested property deleted", snapshotOf[jCityDeleted](t), []string{ruleJSONPropertyNoDelete}, "addr.city"},
		{"new optional properties", snapshotOf[jNewOptional](t), nil, ""},
		{"fields reordered", snapshotOf[jReordered](t), nil, ""},
		{"made nullable (pointer)", snapshotOf[jQtyPointer](t), nil, ""},
		{"no longer required (omitempty)", snapshotOf[jQtyOptional](t), nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Compare(base, tc.cur, CompareOptions{})
			if got := rules(r); !slices.Equal(got, tc.want) {
				t.Fatalf("rules %v, want %v; findings:\n%s", got, tc.want, lines(r))
			}
			if tc.path != "" && r.Findings[0].Path != tc.path {
				t.Errorf("path %q, want %q", r.Findings[0].Path, tc.path)
			}
		})
	}
	re := snapshotOf[jReordered](t)
	re.Types[0].GoType = base.Types[0].GoType
	if b, c := mustEncode(t, base), mustEncode(t, re); !bytes.Equal(b, c) {
		t.Errorf("reordering a struct's fields changed the lock file:\n%s\n%s", b, c)
	}
}

// TestJSONEnumRules: enum values (from schemas other than reflected Go
// types, such as a hand-edited lock) may be added, not deleted.
func TestJSONEnumRules(t *testing.T) {
	schema := func(vals ...any) map[string]any {
		return map[string]any{"type": "object", "properties": map[string]any{"state": map[string]any{"type": "string", "enum": vals}}}
	}
	lock := func(s map[string]any) *Lock {
		return &Lock{Format: FormatVersion, Types: []Entry{{Type: "t", Version: "1", ContentType: "application/json", JSONSchema: s}}}
	}
	old := lock(schema("open", "closed"))
	if r := Compare(old, lock(schema("open", "closed", "held")), CompareOptions{}); !r.OK() {
		t.Errorf("enum value added: %s", lines(r))
	}
	r := Compare(old, lock(schema("open")), CompareOptions{})
	if got := rules(r); !slices.Equal(got, []string{ruleJSONEnumValueNoDelete}) || r.Findings[0].Path != "state" || !strings.Contains(r.Findings[0].Message, `"closed"`) {
		t.Errorf("enum value deleted: %v\n%s", got, lines(r))
	}
}

type custV1 struct {
	Name string `json:"name"`
}

type custV2 struct {
	GivenName  string `json:"given_name"`
	FamilyName string `json:"family_name"`
}

type legacy struct {
	X int `json:"x"`
}

func reg(t *testing.T, setup func(r *eventkit.Registry)) *Lock {
	t.Helper()
	r := eventkit.NewRegistry()
	setup(r)
	l, err := Snapshot(r)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestVersionRaise: a breaking change in place is refused; the same change
// as a new version passes (noted, with or without its upcaster); dropping
// the old version or a whole type is refused unless retired; a codec
// change is refused; UPCASTER_MISSING only when asked for.
func TestVersionRaise(t *testing.T) {
	v1 := func(r *eventkit.Registry) {
		eventkit.MustRegister[custV1](r, "customer.created", "1", eventkit.JSON)
		eventkit.MustRegister[legacy](r, "customer.legacy", "1", eventkit.JSON)
	}
	old := reg(t, v1)
	inPlace := reg(t, func(r *eventkit.Registry) {
		eventkit.MustRegister[custV2](r, "customer.created", "1", eventkit.JSON)
		eventkit.MustRegister[legacy](r, "customer.legacy", "1", eventkit.JSON)
	})
	raised := func(upcast bool) func(r *eventkit.Registry) {
		return func(r *eventkit.Registry) {
			v1(r)
			eventkit.MustRegister[custV2](r, "customer.created", "2", eventkit.JSON)
			if upcast {
				if err := eventkit.RegisterUpcaster(r, "customer.created", "1", "2", func(v custV1) (custV2, error) {
					return custV2{GivenName: v.Name}, nil
				}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	replaced := func(r *eventkit.Registry) {
		eventkit.MustRegister[custV2](r, "customer.created", "2", eventkit.JSON)
		eventkit.MustRegister[legacy](r, "customer.legacy", "1", eventkit.JSON)
	}
	withRetired := func(setup func(*eventkit.Registry), names ...string) *Lock {
		r := eventkit.NewRegistry()
		setup(r)
		l, err := Snapshot(r, Retired(names...))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	noLegacy := func(r *eventkit.Registry) { eventkit.MustRegister[custV1](r, "customer.created", "1", eventkit.JSON) }

	for _, tc := range []struct {
		name    string
		cur     *Lock
		opts    CompareOptions
		want    []string
		noteHas string
		findHas string
	}{
		{name: "breaking change in place", cur: inPlace, want: []string{ruleJSONPropertyNoDelete, ruleJSONRequiredNoAdd}, findHas: "customer.created version 1: name: JSON_PROPERTY_NO_DELETE"},
		{name: "raised with upcaster", cur: reg(t, raised(true)), noteHas: "an upcaster leads from 1 to 2"},
		{name: "raised with upcaster, required", cur: reg(t, raised(true)), opts: CompareOptions{RequireUpcaster: true}, noteHas: "an upcaster leads from 1 to 2"},
		{name: "raised without upcaster", cur: reg(t, raised(false)), noteHas: "no upcaster leads from 1 to 2"},
		{name: "raised without upcaster, required", cur: reg(t, raised(false)), opts: CompareOptions{RequireUpcaster: true}, want: []string{RuleUpcasterMissing}},
		{name: "old version dropped", cur: reg(t, replaced), want: []string{RuleVersionNoDelete}, findHas: "--retired customer.created@1"},
		{name: "old version dropped, retired", cur: withRetired(replaced, "customer.created@1"), noteHas: "customer.created version 1: retired"},
		{name: "type dropped", cur: reg(t, noLegacy), want: []string{RuleTypeNoDelete}, findHas: "customer.legacy version 1: (registration): TYPE_NO_DELETE"},
		{name: "type dropped, retired", cur: withRetired(noLegacy, "customer.legacy"), noteHas: "retired"},
		{name: "codec changed", cur: reg(t, func(r *eventkit.Registry) {
			eventkit.MustRegister[*examplepb.OrderCreated](r, "customer.created", "1", eventkit.Protobuf)
			eventkit.MustRegister[legacy](r, "customer.legacy", "1", eventkit.JSON)
		}), want: []string{RuleContentTypeSame}},
		{name: "new type", cur: reg(t, func(r *eventkit.Registry) {
			v1(r)
			eventkit.MustRegister[custV2](r, "customer.renamed", "1", eventkit.JSON)
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Compare(old, tc.cur, tc.opts)
			if got := rules(r); !slices.Equal(got, tc.want) {
				t.Fatalf("rules %v, want %v; findings:\n%s", got, tc.want, lines(r))
			}
			if tc.noteHas != "" && !strings.Contains(strings.Join(r.Notes, "\n"), tc.noteHas) {
				t.Errorf("notes %q lack %q", r.Notes, tc.noteHas)
			}
			if tc.findHas != "" && !strings.Contains(lines(r), tc.findHas) {
				t.Errorf("findings lack %q:\n%s", tc.findHas, lines(r))
			}
		})
	}
}

func mustEncode(t *testing.T, l *Lock) []byte {
	t.Helper()
	b, err := l.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var update = flag.Bool("update", false, "rewrite testdata/demo.schema.json")

// TestDemoLock: the demo services' registry matches the committed lock
// file byte for byte (run with -update after a deliberate change), and a
// snapshot read back compares equal with itself.
func TestDemoLock(t *testing.T) {
	l, err := Snapshot(shop.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	got := mustEncode(t, l)
	path := filepath.Join("testdata", "demo.schema.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	committed, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if r := Compare(committed, l, CompareOptions{}); !r.OK() {
		t.Fatalf("the demo's event types broke the committed lock:\n%s", lines(r))
	}
	if want := mustEncode(t, committed); !bytes.Equal(got, want) {
		t.Fatalf("testdata/demo.schema.json is stale (compatible change): run go test ./schemacheck -run TestDemoLock -update")
	}
	if len(l.Types) != 4 || l.Types[3].Protobuf == nil || l.Types[0].JSONSchema == nil {
		t.Fatalf("demo lock: %d types, want 4 with order.created in Protobuf:\n%s", len(l.Types), got)
	}
	back, err := Decode(got)
	if err != nil {
		t.Fatal(err)
	}
	if again := mustEncode(t, back); !bytes.Equal(again, got) {
		t.Fatalf("encode(decode(lock)) differs")
	}
}

// TestBadLock: every malformed lock file is one *LockError wrapping
// ErrBadLock, with the reason.
func TestBadLock(t *testing.T) {
	good := `{"eventkit_schema_lock":1,"types":[{"type":"t","version":"1","content_type":"application/json","go_type":"x","upcast_to":null,"json_schema":{}}],"retired":[]}`
	if _, err := Decode([]byte(good)); err != nil {
		t.Fatalf("good lock: %v", err)
	}
	for _, tc := range []struct{ name, in, why string }{
		{"empty", "", "EOF"},
		{"not JSON", "types: []", "invalid character"},
		{"truncated", good[:40], "unexpected EOF"},
		{"trailing data", good + "{}", "data after"},
		{"array", "[]", "cannot unmarshal"},
		{"no format", `{"types":[]}`, "eventkit_schema_lock is 0"},
		{"future format", `{"eventkit_schema_lock":2,"types":[]}`, "want 1"},
		{"unknown key", `{"eventkit_schema_lock":1,"typos":[]}`, "unknown field"},
		{"no type", `{"eventkit_schema_lock":1,"types":[{"version":"1","content_type":"a/b"}]}`, "no type"},
		{"no content type", `{"eventkit_schema_lock":1,"types":[{"type":"t","version":"1"}]}`, "no content_type"},
		{"duplicate", `{"eventkit_schema_lock":1,"types":[{"type":"t","version":"1","content_type":"a/b"},{"type":"t","version":"1","content_type":"a/b"}]}`, "listed twice"},
		{"two schemas", `{"eventkit_schema_lock":1,"types":[{"type":"t","content_type":"a/b","json_schema":{},"protobuf":{"message":"m","messages":[{"name":"m","fields":[]}]}}]}`, "both"},
		{"root message missing", `{"eventkit_schema_lock":1,"types":[{"type":"t","content_type":"a/b","protobuf":{"message":"m","messages":[]}}]}`, "root message"},
		{"field number 0", `{"eventkit_schema_lock":1,"types":[{"type":"t","content_type":"a/b","protobuf":{"message":"m","messages":[{"name":"m","fields":[{"number":0,"name":"a","kind":"string","cardinality":"optional"}]}]}}]}`, "out of range"},
		{"field type missing", `{"eventkit_schema_lock":1,"types":[{"type":"t","content_type":"a/b","protobuf":{"message":"m","messages":[{"name":"m","fields":[{"number":1,"name":"a","kind":"message","type_name":"n","cardinality":"optional"}]}]}}]}`, "not listed"},
		{"bad cardinality", `{"eventkit_schema_lock":1,"types":[{"type":"t","content_type":"a/b","protobuf":{"message":"m","messages":[{"name":"m","fields":[{"number":1,"name":"a","kind":"string","cardinality":"many"}]}]}}]}`, "cardinality"},
		{"bad range", `{"eventkit_schema_lock":1,"types":[{"type":"t","content_type":"a/b","protobuf":{"message":"m","messages":[{"name":"m","fields":[],"reserved_numbers":[[5,2]]}]}}]}`, "start after end"},
		{"number overflow", `{"eventkit_schema_lock":1,"types":[{"type":"t","content_type":"a/b","protobuf":{"message":"m","messages":[{"name":"m","fields":[{"number":99999999999}]}]}}]}`, "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.in))
			var le *LockError
			if !errors.Is(err, ErrBadLock) || !errors.As(err, &le) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("got %v (%T), want a *LockError wrapping ErrBadLock saying %q", err, err, tc.why)
			}
		})
	}
	_, err := ReadFile(filepath.Join(t.TempDir(), "missing.json"))
	var le *LockError
	if !errors.Is(err, ErrBadLock) || !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &le) || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestSnapshotErrors: a JSON Go type encoding/json cannot encode, and a
// malformed retired name, are errors, not a lock.
func TestSnapshotErrors(t *testing.T) {
	r := eventkit.NewRegistry()
	eventkit.MustRegister[struct{ C chan int }](r, "bad", "1", eventkit.JSON)
	if _, err := Snapshot(r); err == nil || !strings.Contains(err.Error(), "bad version 1") {
		t.Errorf("channel field: %v", err)
	}
	if _, err := Snapshot(eventkit.NewRegistry(), Retired("a@1@2")); err == nil {
		t.Error("retired a@1@2 accepted")
	}
}

// TestMain_ exercises Main's exit statuses and its JSON output.
func TestMainCommand(t *testing.T) {
	dir := t.TempDir()
	lock := filepath.Join(dir, "lock.json")
	var out, errb bytes.Buffer
	r := eventkit.NewRegistry()
	eventkit.MustRegister[custV1](r, "customer.created", "1", eventkit.JSON)
	if code := Main(r, []string{"snapshot", "--lock", lock}, &out, &errb); code != 0 {
		t.Fatalf("snapshot: %d %s", code, errb.String())
	}
	changed := eventkit.NewRegistry()
	eventkit.MustRegister[custV2](changed, "customer.created", "1", eventkit.JSON)
	out.Reset()
	errb.Reset()
	if code := Main(changed, []string{"check", "--lock", lock, "--json"}, &out, &errb); code != 1 {
		t.Fatalf("check: exit %d, want 1: %s", code, errb.String())
	}
	var rep struct {
		OK       bool `json:"ok"`
		Findings []struct {
			Type, Version, Rule string
			Path                *string
		} `json:"findings"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.OK || len(rep.Findings) != 3 || rep.Findings[0].Path == nil {
		t.Fatalf("check --json: %v %+v\n%s", err, rep, out.String())
	}
	if strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), "3 against") {
		t.Errorf("stderr: %q", errb.String())
	}
	for _, args := range [][]string{nil, {"diff"}, {"check", "--nope"}, {"snapshot", "extra"}, {"snapshot", "--json"}} {
		if code := Main(r, args, &out, &errb); code != 2 {
			t.Errorf("Main %q: exit %d, want 2", args, code)
		}
	}
}

// TestEmptyJSONSchemaKept: a JSON registration whose schema is {} (any
// value) reads back as a JSON Schema, not as "no schema" — before the fix
// the written lock lost it and every later check reported
// CONTENT_TYPE_SAME against the lock the tool had just written (found by
// FuzzDecodeLock).
func TestEmptyJSONSchemaKept(t *testing.T) {
	l := &Lock{Format: FormatVersion, Types: []Entry{{Type: "t", Version: "1", ContentType: "application/json", JSONSchema: map[string]any{}}}, Retired: []string{}}
	b := mustEncode(t, l)
	back, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Types[0].JSONSchema == nil {
		t.Fatalf("json_schema {} read back as no schema:\n%s", b)
	}
	if r := Compare(l, back, CompareOptions{RequireUpcaster: true}); !r.OK() {
		t.Fatalf("a written lock breaks itself:\n%s", lines(r))
	}
}
