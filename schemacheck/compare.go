package schemacheck

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The rules about registrations as a whole (eventkit's, named in buf's
// style).
const (
	// RuleTypeNoDelete: an event type in the lock file is no longer
	// registered and is not retired.
	RuleTypeNoDelete = "TYPE_NO_DELETE"
	// RuleVersionNoDelete: a version in the lock file is no longer
	// registered (its events in an outbox backlog or a replay could not be
	// decoded) and is not retired.
	RuleVersionNoDelete = "VERSION_NO_DELETE"
	// RuleContentTypeSame: a version's codec changed.
	RuleContentTypeSame = "CONTENT_TYPE_SAME"
	// RuleUpcasterMissing (only with CompareOptions.RequireUpcaster): a new
	// version breaks the previous one and no upcaster leads from it.
	RuleUpcasterMissing = "UPCASTER_MISSING"
)

// A Finding is one breaking change: the registration, the field or
// property (a Protobuf field's full name, a JSON property path such as
// "items[].sku"; empty for the registration itself), the rule it breaks
// and what changed.
type Finding struct {
	Type    string
	Version string
	Path    string
	Rule    string
	Message string
}

// String is the finding as one line:
// "order.created version 1: eventkit.example.v1.OrderCreated.quantity: FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED: ...".
func (f Finding) String() string {
	p := f.Path
	if p == "" {
		p = "(registration)"
	}
	return fmt.Sprintf("%s version %s: %s: %s: %s", f.Type, f.Version, p, f.Rule, f.Message)
}

// A Report is the result of Compare: the breaking changes, and notes on
// changes accepted because the version was raised or a type retired.
type Report struct {
	Findings []Finding
	Notes    []string
}

// OK reports whether there is no breaking change.
func (r *Report) OK() bool { return len(r.Findings) == 0 }

// CompareOptions tunes Compare.
type CompareOptions struct {
	// RequireUpcaster makes a raised version that breaks the previous one a
	// finding (UPCASTER_MISSING) unless an upcaster chain leads from the
	// previous version to it; without it that is a note.
	RequireUpcaster bool
}

// Compare reports the breaking changes from old (the committed lock file)
// to cur (a Snapshot of the registry now):
//
//   - a (type, version) in both must be compatible: Protobuf payloads by
//     buf's WIRE_JSON rules (see the package doc), JSON payloads by the
//     JSON_* rules, and the content type must not change;
//   - a (type, version) of old that is no longer registered is breaking
//     (TYPE_NO_DELETE, VERSION_NO_DELETE) unless cur retires it;
//   - a new version is never breaking: raising the version is how a
//     payload changes incompatibly. Its differences from the previous
//     version are noted, with whether an upcaster leads there (see
//     RequireUpcaster);
//   - new types are compatible.
func Compare(old, cur *Lock, opts CompareOptions) *Report {
	r := &Report{Findings: []Finding{}, Notes: []string{}}
	curByKey := map[[2]string]*Entry{}
	curVersions := map[string][]string{}
	for i := range cur.Types {
		e := &cur.Types[i]
		curByKey[[2]string{e.Type, e.Version}] = e
		curVersions[e.Type] = append(curVersions[e.Type], e.Version)
	}
	oldByKey := map[[2]string]*Entry{}
	for i := range old.Types {
		e := &old.Types[i]
		oldByKey[[2]string{e.Type, e.Version}] = e
	}
	olds := sortedEntries(old.Types)
	for _, oe := range olds {
		add := func(path, rule, msg string) {
			r.Findings = append(r.Findings, Finding{Type: oe.Type, Version: oe.Version, Path: path, Rule: rule, Message: msg})
		}
		ce := curByKey[[2]string{oe.Type, oe.Version}]
		switch {
		case ce == nil && slices.Contains(cur.Retired, oe.Type), ce == nil && slices.Contains(cur.Retired, oe.Type+"@"+oe.Version):
			r.Notes = append(r.Notes, fmt.Sprintf("%s: retired, no longer registered", oe.key()))
		case ce == nil && len(curVersions[oe.Type]) == 0:
			add("", RuleTypeNoDelete, "event type no longer registered (events of it in a backlog or replay cannot be decoded); keep it, or retire it (--retired "+oe.Type+")")
		case ce == nil:
			add("", RuleVersionNoDelete, fmt.Sprintf("version no longer registered (registered: %s); its events in a backlog or replay cannot be decoded: keep it registered with an upcaster to the new version, or retire it (--retired %s@%s)",
				strings.Join(curVersions[oe.Type], ", "), oe.Type, oe.Version))
		default:
			compareEntry(oe, ce, add)
		}
	}
	// New versions: noted against the previous version of the lock file.
	for _, ce := range sortedEntries(cur.Types) {
		if oldByKey[[2]string{ce.Type, ce.Version}] != nil {
			continue
		}
		prev := previous(old.Types, ce.Type, ce.Version)
		if prev == nil {
			continue
		}
		var diffs []string
		compareEntry(prev, ce, func(path, rule, msg string) { diffs = append(diffs, rule) })
		if len(diffs) == 0 {
			continue
		}
		slices.Sort(diffs)
		diffs = slices.Compact(diffs)
		upcast := upcastChain(cur, ce.Type, prev.Version, ce.Version)
		switch {
		case upcast:
			r.Notes = append(r.Notes, fmt.Sprintf("%s: breaks version %s (%s), accepted: the version was raised and an upcaster leads from %s to %s",
				ce.key(), prev.Version, strings.Join(diffs, ", "), prev.Version, ce.Version))
		case opts.RequireUpcaster:
			r.Findings = append(r.Findings, Finding{Type: ce.Type, Version: ce.Version, Rule: RuleUpcasterMissing,
				Message: fmt.Sprintf("breaks version %s (%s) and no upcaster leads from %s to %s", prev.Version, strings.Join(diffs, ", "), prev.Version, ce.Version)})
		default:
			r.Notes = append(r.Notes, fmt.Sprintf("%s: breaks version %s (%s), accepted: the version was raised; no upcaster leads from %s to %s, so consumers that decode only %s cannot read version %s events",
				ce.key(), prev.Version, strings.Join(diffs, ", "), prev.Version, ce.Version, ce.Version, prev.Version))
		}
	}
	return r
}

func compareEntry(oe, ce *Entry, add func(path, rule, msg string)) {
	switch {
	case !strings.EqualFold(mediaType(oe.ContentType), mediaType(ce.ContentType)):
		add("", RuleContentTypeSame, fmt.Sprintf("content type %s changed to %s", oe.ContentType, ce.ContentType))
	case oe.Protobuf != nil && ce.Protobuf != nil:
		compareProto(oe.Protobuf, ce.Protobuf, add)
	case oe.JSONSchema != nil && ce.JSONSchema != nil:
		compareJSON("", oe.JSONSchema, ce.JSONSchema, add)
	case (oe.Protobuf != nil) != (ce.Protobuf != nil) || (oe.JSONSchema != nil) != (ce.JSONSchema != nil):
		add("", RuleContentTypeSame, "the payload schema kind changed (Protobuf, JSON Schema or none)")
	}
}

func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.TrimSpace(mt)
}

// upcastChain reports whether the upcasters registered in cur lead from
// version from to version to.
func upcastChain(cur *Lock, typ, from, to string) bool {
	seen := map[string]bool{}
	for v := from; !seen[v]; {
		seen[v] = true
		var next *string
		for i := range cur.Types {
			if e := &cur.Types[i]; e.Type == typ && e.Version == v {
				next = e.UpcastTo
			}
		}
		if next == nil {
			return false
		}
		if *next == to {
			return true
		}
		v = *next
	}
	return false
}

// previous is the highest version of typ in es below version, or nil.
func previous(es []Entry, typ, version string) *Entry {
	var best *Entry
	for i := range es {
		e := &es[i]
		if e.Type == typ && compareVersions(e.Version, version) < 0 && (best == nil || compareVersions(e.Version, best.Version) > 0) {
			best = e
		}
	}
	return best
}

func sortedEntries(es []Entry) []*Entry {
	out := make([]*Entry, len(es))
	for i := range es {
		out[i] = &es[i]
	}
	slices.SortFunc(out, func(a, b *Entry) int {
		if d := strings.Compare(a.Type, b.Type); d != 0 {
			return d
		}
		return compareVersions(a.Version, b.Version)
	})
	return out
}

// compareVersions orders data versions: numerically when both are whole
// numbers ("2" < "10"), as strings otherwise.
func compareVersions(a, b string) int {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	if errA == nil && errB == nil {
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
	}
	return strings.Compare(a, b)
}
