package eventkit_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/eventkitpb/examplepb"
)

func TestCodecs(t *testing.T) {
	t.Parallel()
	if eventkit.JSON.ContentType() != "application/json" || eventkit.Protobuf.ContentType() != "application/protobuf" {
		t.Fatal("content types")
	}
	order := &examplepb.OrderCreated{OrderId: "o-1", ProductName: "Tasse ☕", Quantity: 3, UnitPriceCents: 450, Currency: "EUR"}
	b, err := eventkit.Protobuf.Marshal(order)
	if err != nil {
		t.Fatal(err)
	}
	var got examplepb.OrderCreated
	if err := eventkit.Protobuf.Unmarshal(b, &got); err != nil || !proto.Equal(&got, order) {
		t.Fatalf("%v %v", err, &got)
	}
	var ptr *examplepb.OrderCreated // **T is allocated
	if err := eventkit.Protobuf.Unmarshal(b, &ptr); err != nil || !proto.Equal(ptr, order) {
		t.Fatalf("%v %v", err, ptr)
	}
	if _, err := eventkit.Protobuf.Marshal(struct{}{}); err == nil {
		t.Error("Marshal of a non-message succeeded")
	}
	var s struct{}
	if err := eventkit.Protobuf.Unmarshal(b, &s); err == nil {
		t.Error("Unmarshal into a non-message succeeded")
	}
	if err := eventkit.Protobuf.Unmarshal([]byte{0xff}, &got); err == nil {
		t.Error("garbage decoded")
	}

	j, err := eventkit.JSON.Marshal(map[string]int{"a": 1})
	if err != nil || string(j) != `{"a":1}` {
		t.Fatalf("%v %s", err, j)
	}
	var m map[string]int
	if err := eventkit.JSON.Unmarshal(j, &m); err != nil || m["a"] != 1 {
		t.Fatal(err)
	}
}
