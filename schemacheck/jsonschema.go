package schemacheck

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// The JSON rules are eventkit's, named in buf's style. Every one protects
// both directions: a reader of the new type reading old events, and a
// reader of the old type (or of the old schema) reading new events.
const (
	ruleJSONPropertyNoDelete  = "JSON_PROPERTY_NO_DELETE"
	ruleJSONPropertySameType  = "JSON_PROPERTY_SAME_TYPE"
	ruleJSONRequiredNoAdd     = "JSON_REQUIRED_NO_ADD"
	ruleJSONEnumValueNoDelete = "JSON_ENUM_VALUE_NO_DELETE"
)

// ignoredKeywords do not change what a document is valid against.
var ignoredKeywords = []string{"title", "description"}

// comparedKeywords are handled one by one by compareJSON; every other
// keyword must stay equal.
var comparedKeywords = []string{"type", "properties", "required", "enum", "items", "additionalProperties"}

// compareJSON reports what in cur rejects data valid against old, or reads
// it differently, at the JSON path path ("" is the payload itself).
func compareJSON(path string, old, cur map[string]any, report func(path, rule, msg string)) {
	where := path
	if where == "" {
		where = "(payload)"
	}
	if ot, ct := typeSet(old), typeSet(cur); !sameTypes(ot, ct) {
		report(where, ruleJSONPropertySameType, fmt.Sprintf("type %s changed to %s", typeString(ot), typeString(ct)))
	}
	keys := map[string]bool{}
	for k := range old {
		keys[k] = true
	}
	for k := range cur {
		keys[k] = true
	}
	var other []string
	for k := range keys {
		if !slices.Contains(ignoredKeywords, k) && !slices.Contains(comparedKeywords, k) && !jsonEqual(old[k], cur[k]) {
			other = append(other, k)
		}
	}
	slices.Sort(other)
	for _, k := range other {
		report(where, ruleJSONPropertySameType, fmt.Sprintf("%s %s changed to %s", k, jsonText(old[k]), jsonText(cur[k])))
	}

	oprops, _ := old["properties"].(map[string]any)
	cprops, _ := cur["properties"].(map[string]any)
	for _, name := range sortedKeys(oprops) {
		sub := join(path, name)
		cs, ok := cprops[name]
		if !ok {
			report(sub, ruleJSONPropertyNoDelete, "property deleted (readers of the old type lose it; keep it, or raise the version)")
			continue
		}
		os, _ := oprops[name].(map[string]any)
		csm, _ := cs.(map[string]any)
		compareJSON(sub, os, csm, report)
	}
	oreq, creq := strs(old["required"]), strs(cur["required"])
	for _, name := range creq {
		if !slices.Contains(oreq, name) {
			why := "an existing property became required"
			if _, existed := oprops[name]; !existed {
				why = "a new required property (old events lack it; add it with omitempty or omitzero)"
			}
			report(join(path, name), ruleJSONRequiredNoAdd, why)
		}
	}
	if oe, ok := old["enum"].([]any); ok {
		ce, _ := cur["enum"].([]any)
		_, curHas := cur["enum"]
		for _, v := range oe {
			if curHas && !slices.ContainsFunc(ce, func(x any) bool { return jsonEqual(x, v) }) {
				report(where, ruleJSONEnumValueNoDelete, fmt.Sprintf("enum value %s deleted", jsonText(v)))
			}
		}
	}
	if oi, ok := old["items"].(map[string]any); ok {
		if ci, ok := cur["items"].(map[string]any); ok {
			compareJSON(path+"[]", oi, ci, report)
		}
	}
	if oa, ok := old["additionalProperties"].(map[string]any); ok {
		if ca, ok := cur["additionalProperties"].(map[string]any); ok {
			compareJSON(path+"{}", oa, ca, report)
		}
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// typeSet is the sorted "type" of s; nil means any type.
func typeSet(s map[string]any) []string {
	switch t := s["type"].(type) {
	case string:
		return []string{t}
	case []any:
		out := strs(t)
		slices.Sort(out)
		return slices.Compact(out)
	}
	return nil
}

// sameTypes: the sets are equal, or cur only adds "null" (a field made a
// pointer: encoding/json readers of the old type read null as "no
// change").
func sameTypes(old, cur []string) bool {
	if old == nil || cur == nil {
		return old == nil && cur == nil
	}
	if slices.Equal(old, cur) {
		return true
	}
	if !slices.Contains(old, "null") && slices.Contains(cur, "null") {
		return slices.Equal(old, slices.DeleteFunc(slices.Clone(cur), func(s string) bool { return s == "null" }))
	}
	return false
}

func typeString(t []string) string {
	if t == nil {
		return "any"
	}
	return strings.Join(t, "|")
}

func strs(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, x := range a {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func jsonText(v any) string {
	if v == nil {
		return "(none)"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func jsonEqual(a, b any) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	return jsonText(a) == jsonText(b)
}
