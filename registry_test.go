package eventkit_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/eventkitpb/examplepb"
)

type orderCreatedV1 struct {
	OrderID string `json:"order_id"`
	Total   int64  `json:"total_cents"`
}

type orderCreatedV2 struct {
	OrderID  string `json:"order_id"`
	Total    int64  `json:"total_cents"`
	Currency string `json:"currency"`
}

type orderShipped struct {
	OrderID string `json:"order_id"`
	Carrier string `json:"carrier"`
}

func newTestRegistry(t testing.TB) *eventkit.Registry {
	t.Helper()
	r := eventkit.NewRegistry()
	for _, err := range []error{
		eventkit.Register[orderCreatedV1](r, "order.created", "1", eventkit.JSON),
		eventkit.Register[orderCreatedV2](r, "order.created", "2", eventkit.JSON, eventkit.SchemaURI("https://schemas.example.com/order.created/2")),
		eventkit.Register[*orderShipped](r, "order.shipped", "1", eventkit.JSON),
		eventkit.Register[*examplepb.OrderCreated](r, "shop.order.created", "1", eventkit.Protobuf),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestRegistryRoundTrip(t *testing.T) {
	t.Parallel()
	r := newTestRegistry(t)

	ev, err := eventkit.NewTyped(r, orderCreatedV2{OrderID: "o-1", Total: 1999, Currency: "EUR"}, eventkit.WithSubject("o-1"))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "order.created" || ev.DataVersion != "2" || ev.DataContentType != "application/json" ||
		ev.DataSchema != "https://schemas.example.com/order.created/2" || ev.Subject != "o-1" || ev.ID == "" || ev.Time.IsZero() {
		t.Fatalf("NewTyped: %+v", ev)
	}
	if err := ev.Validate(0); err != nil {
		t.Fatal(err)
	}
	got, err := eventkit.Decode[orderCreatedV2](r, ev)
	if err != nil || got != (orderCreatedV2{OrderID: "o-1", Total: 1999, Currency: "EUR"}) {
		t.Fatalf("Decode: %v %+v", err, got)
	}
	anyV, err := r.Decode(ev)
	if err != nil || anyV != any(got) {
		t.Fatalf("Registry.Decode: %v %#v", err, anyV)
	}

	// Version 1 decodes into its own type.
	v1, err := eventkit.NewTyped(r, orderCreatedV1{OrderID: "o-2", Total: 5})
	if err != nil || v1.DataVersion != "1" || v1.DataSchema != "" {
		t.Fatalf("%v %+v", err, v1)
	}
	if got, err := r.Decode(v1); err != nil || got != any(orderCreatedV1{OrderID: "o-2", Total: 5}) {
		t.Fatalf("%v %#v", err, got)
	}

	// Pointer types are allocated.
	sh, err := eventkit.NewTyped(r, &orderShipped{OrderID: "o-3", Carrier: "DHL"})
	if err != nil {
		t.Fatal(err)
	}
	shGot, err := eventkit.Decode[*orderShipped](r, sh)
	if err != nil || *shGot != (orderShipped{OrderID: "o-3", Carrier: "DHL"}) {
		t.Fatalf("%v %+v", err, shGot)
	}

	// Protobuf.
	order := &examplepb.OrderCreated{OrderId: "o-4", CustomerId: "c-1", ProductSku: "SKU-1", ProductName: "Mug",
		Quantity: 2, UnitPriceCents: 1250, Currency: "EUR"}
	pe, err := eventkit.NewTyped(r, order, eventkit.WithSubject(order.OrderId))
	if err != nil {
		t.Fatal(err)
	}
	if pe.DataContentType != "application/protobuf" || pe.Type != "shop.order.created" {
		t.Fatalf("%+v", pe)
	}
	pGot, err := eventkit.Decode[*examplepb.OrderCreated](r, pe)
	if err != nil || !proto.Equal(pGot, order) {
		t.Fatalf("%v %v", err, pGot)
	}
	if a, err := r.Decode(pe); err != nil || !proto.Equal(a.(*examplepb.OrderCreated), order) {
		t.Fatalf("%v %v", err, a)
	}

	// A typed event survives every envelope encoding and still decodes.
	b, _ := pe.MarshalJSON()
	viaJSON, err := eventkit.DecodeStructured(b)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := eventkit.MarshalProto(pe)
	viaProto, err := eventkit.DecodeProto(pb)
	if err != nil {
		t.Fatal(err)
	}
	viaNATS, _, err := bindingRoundTrip(eventkit.NATSBinding, pe)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []eventkit.Event{viaJSON, viaProto, viaNATS} {
		if got, err := eventkit.Decode[*examplepb.OrderCreated](r, e); err != nil || !proto.Equal(got, order) {
			t.Fatalf("%v %v", err, got)
		}
	}
}

// wantPayloadError checks the contract: a *DecodeError keeping the payload,
// permanent, wrapping sentinel (if not nil), whose message names the parts.
func wantPayloadError(t *testing.T, err error, ev eventkit.Event, sentinel error, mentions ...string) {
	t.Helper()
	var de *eventkit.DecodeError
	if !errors.As(err, &de) || !errors.Is(err, eventkit.ErrDecode) || !eventkit.IsPermanent(err) {
		t.Fatalf("err = %v, want a permanent *DecodeError", err)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want it to wrap %v", err, sentinel)
	}
	if string(de.Raw) != string(ev.Data) {
		t.Fatalf("DecodeError.Raw = %q, want the payload", de.Raw)
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Fatalf("err %q does not mention %q", err, m)
		}
	}
}

func TestRegistryRejects(t *testing.T) {
	t.Parallel()
	r := newTestRegistry(t)
	good, err := eventkit.NewTyped(r, orderCreatedV1{OrderID: "o", Total: 1})
	if err != nil {
		t.Fatal(err)
	}

	unknown := good
	unknown.Type = "order.cancelled"
	_, err = r.Decode(unknown)
	wantPayloadError(t, err, unknown, eventkit.ErrUnknownType, "order.cancelled")
	_, err = eventkit.Decode[orderCreatedV1](r, unknown)
	wantPayloadError(t, err, unknown, eventkit.ErrUnknownType)
	if errors.Is(err, eventkit.ErrUnsupportedVersion) {
		t.Fatal("unknown type reported as unsupported version")
	}

	v3 := good
	v3.DataVersion = "3"
	_, err = r.Decode(v3)
	wantPayloadError(t, err, v3, eventkit.ErrUnsupportedVersion, "order.created", `"3"`, `"1", "2"`)
	_, err = eventkit.Decode[orderCreatedV2](r, v3)
	wantPayloadError(t, err, v3, eventkit.ErrUnsupportedVersion)
	if errors.Is(err, eventkit.ErrUnknownType) {
		t.Fatal("unsupported version reported as unknown type")
	}
	if err := r.Check(v3); !errors.Is(err, eventkit.ErrUnsupportedVersion) {
		t.Fatal(err)
	}
	if err := r.Check(good); err != nil {
		t.Fatal(err)
	}

	noVersion := good
	noVersion.DataVersion = ""
	_, err = r.Decode(noVersion)
	wantPayloadError(t, err, noVersion, eventkit.ErrUnsupportedVersion)

	// The codec must fit the content type; parameters and case do not matter.
	wrongCT := good
	wrongCT.DataContentType = "application/protobuf"
	_, err = r.Decode(wrongCT)
	wantPayloadError(t, err, wrongCT, eventkit.ErrContentType, "application/protobuf", "application/json")
	for _, ct := range []string{"", "application/json; charset=utf-8", "Application/JSON", "text/json", "application/vnd.order+json"} {
		ok := good
		ok.DataContentType = ct
		if _, err := r.Decode(ok); err != nil {
			t.Fatalf("content type %q: %v", ct, err)
		}
	}
	for _, ct := range []string{"text/plain", "application/jsonx", "application/xml"} {
		bad := good
		bad.DataContentType = ct
		_, err = r.Decode(bad)
		wantPayloadError(t, err, bad, eventkit.ErrContentType, ct)
	}
	pe, _ := eventkit.NewTyped(r, &examplepb.OrderCreated{OrderId: "x"})
	pe.DataContentType = ""
	_, err = r.Decode(pe)
	wantPayloadError(t, err, pe, eventkit.ErrContentType) // empty means JSON
	pe.DataContentType = "application/x-protobuf"
	if _, err := r.Decode(pe); err != nil {
		t.Fatal(err)
	}

	// A payload the codec cannot decode.
	for _, data := range [][]byte{nil, []byte(`{"order_id":`), []byte(`{"order_id":5}`), []byte("\xff")} {
		bad := good
		bad.Data = data
		_, err = r.Decode(bad)
		wantPayloadError(t, err, bad, nil, "order.created")
		_, err = eventkit.Decode[orderCreatedV1](r, bad)
		wantPayloadError(t, err, bad, nil)
	}
	badPB := pe
	badPB.Data = []byte{0xff, 0xff, 0xff}
	_, err = eventkit.Decode[*examplepb.OrderCreated](r, badPB)
	wantPayloadError(t, err, badPB, nil)

	// Decode[T] with the wrong T never decodes.
	_, err = eventkit.Decode[orderCreatedV2](r, good)
	wantPayloadError(t, err, good, nil, "orderCreatedV1", "orderCreatedV2")
}

func TestRegisterRules(t *testing.T) {
	t.Parallel()
	r := eventkit.NewRegistry()
	if err := eventkit.Register[orderCreatedV1](r, "", "1", eventkit.JSON); err == nil {
		t.Error("empty type accepted")
	}
	if err := eventkit.Register[orderCreatedV1](r, "bad\ntype", "1", eventkit.JSON); err == nil {
		t.Error("control character accepted")
	}
	if err := eventkit.Register[orderCreatedV1](r, "a", "1", nil); err == nil {
		t.Error("nil codec accepted")
	}
	if err := eventkit.Register[orderCreatedV1](r, "a", "1", eventkit.Protobuf); err == nil {
		t.Error("protobuf codec with a struct accepted")
	}
	if err := eventkit.Register[examplepb.OrderCreated](r, "a", "1", eventkit.Protobuf); err == nil {
		t.Error("protobuf codec with a non-pointer message accepted")
	}
	if err := eventkit.Register[orderCreatedV1](r, "a", "1", eventkit.JSON); err != nil {
		t.Fatal(err)
	}
	if err := eventkit.Register[orderCreatedV1](r, "a", "1", eventkit.JSON); err != nil {
		t.Errorf("identical registration: %v", err)
	}
	if err := eventkit.Register[orderCreatedV2](r, "a", "1", eventkit.JSON); err == nil {
		t.Error("conflicting registration accepted")
	}
	if err := eventkit.Register[orderCreatedV1](r, "b", "1", eventkit.JSON); err == nil {
		t.Error("one Go type under two event types accepted")
	}
	// A codec type that cannot be compared with == does not make Register panic.
	type cPayload struct{ C int }
	if err := eventkit.Register[cPayload](r, "c", "1", sliceCodec{}); err != nil {
		t.Fatal(err)
	}
	if err := eventkit.Register[cPayload](r, "c", "1", sliceCodec{}); err == nil {
		t.Error("re-registration with an incomparable codec: want an error, not a panic or a silent no-op")
	}
	// The same Go type for two versions: NewTyped writes the last one,
	// WithDataVersion picks another; both decode.
	if err := eventkit.Register[orderCreatedV1](r, "a", "2", eventkit.JSON); err != nil {
		t.Fatal(err)
	}
	ev, err := eventkit.NewTyped(r, orderCreatedV1{OrderID: "x"})
	if err != nil || ev.DataVersion != "2" {
		t.Fatalf("%v %q", err, ev.DataVersion)
	}
	ev, err = eventkit.NewTyped(r, orderCreatedV1{OrderID: "x"}, eventkit.WithDataVersion("1"))
	if err != nil || ev.DataVersion != "1" {
		t.Fatalf("%v %q", err, ev.DataVersion)
	}
	if got, err := eventkit.Decode[orderCreatedV1](r, ev); err != nil || got.OrderID != "x" {
		t.Fatal(err)
	}
	if _, err := eventkit.NewTyped(r, orderCreatedV1{}, eventkit.WithDataVersion("9")); !errors.Is(err, eventkit.ErrUnsupportedVersion) {
		t.Errorf("unregistered version: %v", err)
	}
	if _, err := eventkit.NewTyped(r, orderShipped{}); !errors.Is(err, eventkit.ErrUnknownType) {
		t.Errorf("unregistered Go type: %v", err)
	}
	// An empty version matches events without dataversion.
	if err := eventkit.Register[map[string]any](r, "foreign", "", eventkit.JSON); err != nil {
		t.Fatal(err)
	}
	foreign := eventkit.New("foreign", "", []byte(`{"k":"v"}`), eventkit.WithDataVersion(""))
	if got, err := eventkit.Decode[map[string]any](r, foreign); err != nil || got["k"] != "v" {
		t.Fatalf("%v %v", err, got)
	}

	types := r.Types()
	if len(types) != 4 || types[0].Type != "a" || types[0].Version != "1" || types[1].Version != "2" ||
		types[2].Type != "c" || types[3].Type != "foreign" || types[0].GoType != reflect.TypeFor[orderCreatedV1]() || types[0].ContentType != "application/json" {
		t.Fatalf("Types() = %+v", types)
	}

	defer func() {
		if recover() == nil {
			t.Error("MustRegister did not panic")
		}
	}()
	eventkit.MustRegister[orderCreatedV2](r, "a", "1", eventkit.JSON)
}

// sliceCodec is a JSON codec whose type is not comparable.
type sliceCodec struct{ opts []string }

func (sliceCodec) ContentType() string                { return "application/json" }
func (sliceCodec) Marshal(v any) ([]byte, error)      { return eventkit.JSON.Marshal(v) }
func (sliceCodec) Unmarshal(data []byte, v any) error { return eventkit.JSON.Unmarshal(data, v) }

// A nil *Registry means DefaultRegistry.
func TestDefaultRegistry(t *testing.T) {
	type defaultPayload struct{ N int }
	eventkit.MustRegister[defaultPayload](nil, "test.default.payload", "1", eventkit.JSON)
	ev, err := eventkit.NewTyped(nil, defaultPayload{N: 7})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := eventkit.Decode[defaultPayload](eventkit.DefaultRegistry, ev); err != nil || got.N != 7 {
		t.Fatalf("%v %v", err, got)
	}
	if got, err := (*eventkit.Registry)(nil).Decode(ev); err != nil || got.(defaultPayload).N != 7 {
		t.Fatalf("%v %v", err, got)
	}
}

// Registration, encoding and decoding from many goroutines at once (run with
// -race): every decode gets its own value back, never another's.
func TestRegistryConcurrent(t *testing.T) {
	t.Parallel()
	r := newTestRegistry(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				// Keep registering new types while others decode.
				if i%50 == 0 {
					typ := fmt.Sprintf("dyn.%d.%d", g, i)
					if err := eventkit.Register[map[string]int](r, typ, "1", eventkit.JSON); err != nil &&
						!strings.Contains(err.Error(), "already registered") {
						errs <- err
						return
					}
					_ = r.Types()
				}
				id := fmt.Sprintf("o-%d-%d", g, i)
				var ev eventkit.Event
				var err error
				switch i % 3 {
				case 0:
					ev, err = eventkit.NewTyped(r, orderCreatedV2{OrderID: id, Total: int64(i)})
				case 1:
					ev, err = eventkit.NewTyped(r, &examplepb.OrderCreated{OrderId: id, Quantity: int32(i)})
				default:
					ev, err = eventkit.NewTyped(r, &orderShipped{OrderID: id})
				}
				if err != nil {
					errs <- err
					return
				}
				v, err := r.Decode(ev)
				if err != nil {
					errs <- err
					return
				}
				var gotID string
				switch p := v.(type) {
				case orderCreatedV2:
					gotID = p.OrderID
				case *examplepb.OrderCreated:
					gotID = p.OrderId
				case *orderShipped:
					gotID = p.OrderID
				}
				if gotID != id {
					errs <- fmt.Errorf("decoded %q, want %q", gotID, id)
					return
				}
				unknown := ev
				unknown.DataVersion = "99"
				if _, err := r.Decode(unknown); !errors.Is(err, eventkit.ErrUnsupportedVersion) {
					errs <- fmt.Errorf("version 99: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
