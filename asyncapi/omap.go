package asyncapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// obj is a JSON object that keeps its keys in insertion order, so that the
// document reads top-down (asyncapi, info, channels, operations, components)
// and the output is byte-for-byte deterministic.
type obj struct {
	keys []string
	vals map[string]any
}

func newObj(kv ...any) *obj {
	o := &obj{vals: make(map[string]any, len(kv)/2)}
	for i := 0; i+1 < len(kv); i += 2 {
		o.set(kv[i].(string), kv[i+1])
	}
	return o
}

// set adds or replaces key.
func (o *obj) set(key string, v any) *obj {
	if _, ok := o.vals[key]; !ok {
		o.keys = append(o.keys, key)
	}
	o.vals[key] = v
	return o
}

func (o *obj) get(key string) any { return o.vals[key] }

func (o *obj) has(key string) bool { _, ok := o.vals[key]; return ok }

// MarshalJSON writes the keys in order.
func (o *obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		vb, err := json.Marshal(o.vals[k])
		if err != nil {
			return nil, err
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// writeYAML writes v (an *obj, []any, []string, string, bool, number or nil)
// as block-style YAML. Every string is written double-quoted with JSON
// escapes, which YAML double-quoted scalars accept unchanged, so no value is
// ever mistaken for a number, a boolean or null.
func writeYAML(b *bytes.Buffer, v any, indent int) error {
	pad := strings.Repeat("  ", indent)
	switch x := v.(type) {
	case *obj:
		if len(x.keys) == 0 {
			b.WriteString(" {}\n")
			return nil
		}
		b.WriteByte('\n')
		for _, k := range x.keys {
			b.WriteString(pad)
			b.WriteString(yamlKey(k))
			b.WriteByte(':')
			if err := writeYAMLValue(b, x.vals[k], indent+1); err != nil {
				return err
			}
		}
	case []any:
		if len(x) == 0 {
			b.WriteString(" []\n")
			return nil
		}
		b.WriteByte('\n')
		for _, e := range x {
			b.WriteString(pad)
			b.WriteString("-")
			if err := writeYAMLValue(b, e, indent+1); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("asyncapi: cannot write %T as YAML", v)
	}
	return nil
}

func writeYAMLValue(b *bytes.Buffer, v any, indent int) error {
	switch x := v.(type) {
	case *obj, []any:
		return writeYAML(b, x, indent)
	case []string:
		a := make([]any, len(x))
		for i, s := range x {
			a[i] = s
		}
		return writeYAML(b, a, indent)
	case string:
		b.WriteString(" " + yamlString(x) + "\n")
	case bool:
		b.WriteString(" " + strconv.FormatBool(x) + "\n")
	case int:
		b.WriteString(" " + strconv.Itoa(x) + "\n")
	case int64:
		b.WriteString(" " + strconv.FormatInt(x, 10) + "\n")
	case uint64:
		b.WriteString(" " + strconv.FormatUint(x, 10) + "\n")
	case float64:
		b.WriteString(" " + strconv.FormatFloat(x, 'g', -1, 64) + "\n")
	case nil:
		b.WriteString(" null\n")
	default:
		return fmt.Errorf("asyncapi: cannot write %T as YAML", v)
	}
	return nil
}

var plainKey = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_.$-]*$`)

// yamlKey writes k plain when YAML cannot read it as anything but that
// string, quoted otherwise.
func yamlKey(k string) string {
	switch strings.ToLower(k) {
	case "y", "n", "yes", "no", "on", "off", "true", "false", "null":
		return yamlString(k)
	}
	if plainKey.MatchString(k) {
		return k
	}
	return yamlString(k)
}

func yamlString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
