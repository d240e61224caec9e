package schemacheck

import (
	"bytes"
	"os"
	"testing"
)

// FuzzDecodeLock: Decode never panics; a lock it accepts encodes to bytes
// it accepts again and that encode the same, and compares with itself
// (and with an empty lock) without panicking and, with itself, without a
// finding.
func FuzzDecodeLock(f *testing.F) {
	if demo, err := os.ReadFile("testdata/demo.schema.json"); err == nil {
		f.Add(demo)
	}
	f.Add([]byte(`{"eventkit_schema_lock":1,"types":[],"retired":["a@1"]}`))
	f.Add([]byte(`{"eventkit_schema_lock":1,"types":[{"type":"t","version":"1","content_type":"a/b","protobuf":{"message":"m","messages":[{"name":"m","fields":[{"number":1,"name":"a","json_name":"a","kind":"enum","type_name":"e","cardinality":"optional"}],"reserved_numbers":[[2,9]]}],"enums":[{"name":"e","values":[{"number":0,"name":"Z"}],"reserved_numbers":[[-5,-1]]}]}}]}`))
	f.Add([]byte(`{"eventkit_schema_lock":1,"types":[{"type":"t","content_type":"application/json","json_schema":{"type":["object","null"],"properties":{"a":{"items":{"enum":[1,"x",null]}}},"required":["a",3]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Decode(data)
		if err != nil {
			return
		}
		b, err := l.Encode()
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		back, err := Decode(b)
		if err != nil {
			t.Fatalf("decode(encode(lock)): %v\n%s", err, b)
		}
		if b2, _ := back.Encode(); !bytes.Equal(b, b2) {
			t.Fatalf("encoding not stable:\n%s\n%s", b, b2)
		}
		if r := Compare(l, back, CompareOptions{RequireUpcaster: true}); !r.OK() {
			t.Fatalf("a lock breaks itself:\n%s", lines(r))
		}
		Compare(l, &Lock{Format: FormatVersion}, CompareOptions{})
		Compare(&Lock{Format: FormatVersion}, l, CompareOptions{})
	})
}
