package eventkit_test

import (
	"errors"
	"iter"
	"reflect"
	"testing"

	"github.com/eventkit/eventkit"
)

func firstValues(h map[string][]string) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for k, vs := range h {
			if len(vs) > 0 && !yield(k, vs[0]) {
				return
			}
		}
	}
}

// TestDecodeHeaderMatchesDecode: DecodeHeader reads a multi-valued map as
// Decode reads its first values, for good events, the alternative
// content-type key, extra values and bad input (the same typed error
// keeping the headers).
func TestDecodeHeaderMatchesDecode(t *testing.T) {
	e := eventkit.New("order.created", "application/json", []byte(`{"a":1}`),
		eventkit.WithSubject("o 1/ü"), eventkit.WithSource("/shop"), eventkit.WithExtension("tenant", "t1"))
	good := map[string][]string{}
	eventkit.NATSBinding.Headers(e, func(k, v string) { good[k] = append(good[k], v) })
	good["ce-type"] = append(good["ce-type"], "ignored.second.value")
	alt := map[string][]string{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"}, "content-type": {"text/plain"}, "x-other": {"v"}}
	noID := map[string][]string{"ce-specversion": {"1.0"}, "ce-source": {"/s"}, "ce-type": {"t"}, "ce-empty": {}}
	badTime := map[string][]string{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"}, "ce-time": {"yesterday"}}
	for name, h := range map[string]map[string][]string{"good": good, "alt": alt, "noID": noID, "badTime": badTime, "empty": {}, "nil": nil} {
		t.Run(name, func(t *testing.T) {
			body := []byte("body")
			got, gerr := eventkit.NATSBinding.DecodeHeader(h, "", body)
			want, werr := eventkit.NATSBinding.Decode(firstValues(h), "", body)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("DecodeHeader = %+v, Decode = %+v", got, want)
			}
			if (gerr == nil) != (werr == nil) {
				t.Fatalf("DecodeHeader err %v, Decode err %v", gerr, werr)
			}
			if gerr == nil {
				return
			}
			var gd, wd *eventkit.DecodeError
			if !errors.As(gerr, &gd) || !errors.As(werr, &wd) {
				t.Fatalf("errors %T %T, want *eventkit.DecodeError", gerr, werr)
			}
			if gerr.Error() != werr.Error() || !reflect.DeepEqual(gd.Headers, wd.Headers) || string(gd.Raw) != "body" {
				t.Fatalf("DecodeHeader error %v %v, Decode error %v %v", gerr, gd.Headers, werr, wd.Headers)
			}
		})
	}
	if got, err := eventkit.NATSBinding.DecodeHeader(good, "", nil); err != nil || got.Subject != "o 1/ü" || got.Extensions["tenant"] != "t1" {
		t.Fatalf("DecodeHeader(good) = %+v, %v", got, err)
	}
}
