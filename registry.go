package eventkit

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrContentType is wrapped by the *DecodeError a Registry returns when an
// event's DataContentType does not fit the codec registered for its type.
var ErrContentType = errors.New("eventkit: data content type does not match the registered codec")

// A Registry maps event types to Go types: an event type name plus a data
// version ("order.created", "2") names one Go type and the Codec its payload
// is encoded with. Producers build events from Go values with NewTyped;
// consumers turn events back into Go values with Decode (typed) or
// Registry.Decode (untyped).
//
// A consumer never decodes a payload into the wrong type: an event whose type
// is not registered is rejected with ErrUnknownType, one whose type is known
// but whose version is not with ErrUnsupportedVersion, one whose content type
// does not fit the codec with ErrContentType, and a payload the codec cannot
// decode with the codec's error. Content types match by media type, ignoring
// case and parameters; an empty one means application/json (as in
// CloudEvents), the JSON codec also takes text/json and */*+json, and the
// Protobuf codec application/x-protobuf. Every one of these is a *DecodeError that
// keeps the payload, so IsPermanent is true for it and the consumer runtime
// dead-letters the event instead of retrying it.
//
// A Registry is safe for concurrent use; registration usually happens at
// start-up, before events flow. The zero value is not usable: call
// NewRegistry, or use DefaultRegistry.
type Registry struct {
	mu     sync.RWMutex
	byName map[string]map[string]*typeEntry // event type -> data version -> entry
	byGo   map[reflect.Type]*typeEntry      // Go type -> entry NewTyped uses
}

// typeEntry is one registration.
type typeEntry struct {
	eventType string
	version   string
	goType    reflect.Type
	codec     Codec
	schema    string
	decode    func(data []byte) (any, error) // decodes into a value of goType
	upcastTo  string                         // the version upcast converts to ("" if none)
	upcast    func(v any) (any, error)       // converts a goType value to upcastTo's type
}

// timeOne is a non-zero time for validating registrations.
var timeOne = time.Unix(1, 0)

// DefaultRegistry is the registry used when a nil *Registry is passed to
// Register, NewTyped, Decode and the Registry methods.
var DefaultRegistry = NewRegistry()

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{
		byName: make(map[string]map[string]*typeEntry),
		byGo:   make(map[reflect.Type]*typeEntry),
	}
}

func (r *Registry) orDefault() *Registry {
	if r == nil {
		return DefaultRegistry
	}
	return r
}

// A RegisterOption sets an optional property of a registration.
type RegisterOption func(*typeEntry)

// SchemaURI makes NewTyped set the events' DataSchema to uri (unless the
// caller sets one with WithDataSchema).
func SchemaURI(uri string) RegisterOption { return func(t *typeEntry) { t.schema = uri } }

// TypeInfo describes one registration (see Registry.Types).
type TypeInfo struct {
	Type        string       // the event type: "order.created"
	Version     string       // the data version: "1"
	GoType      reflect.Type // the Go type of the payload
	ContentType string       // the codec's media type
	Schema      string       // the dataschema set by NewTyped, if any
	UpcastTo    string       // the version RegisterUpcaster converts this one to ("" if none)
}

// Register makes r map events of type eventType and data version version to
// the Go type T, with payloads encoded by codec. A Go type may be registered
// under several versions of one event type (for example when version 2 only
// adds optional fields); NewTyped then writes the version registered last.
// Different Go types may be registered for different versions of one event
// type (OrderCreatedV1, OrderCreatedV2).
//
// Register returns an error if eventType is empty or not a valid attribute
// value, if codec is nil, if the codec cannot handle T (the Protobuf codec
// needs a generated message pointer type such as *examplepb.OrderCreated),
// if (eventType, version) is already registered differently, or if T is
// already registered under another event type. Registering exactly the same
// thing again is a no-op. An empty version is allowed: it matches events that
// carry no dataversion.
func Register[T any](r *Registry, eventType, version string, codec Codec, opts ...RegisterOption) error {
	r = r.orDefault()
	goType := reflect.TypeFor[T]()
	switch {
	case eventType == "":
		return errors.New("eventkit: register: event type must not be empty")
	case codec == nil:
		return fmt.Errorf("eventkit: register %s: codec must not be nil", eventType)
	case codec.ContentType() == "":
		return fmt.Errorf("eventkit: register %s: codec %T has no content type", eventType, codec)
	}
	probe := Event{ID: "x", Type: eventType, Source: "x", Time: timeOne, DataVersion: version}
	if err := probe.Validate(0); err != nil {
		return fmt.Errorf("eventkit: register %q version %q: %w", eventType, version, err)
	}
	if err := checkType(codec, goType); err != nil {
		return fmt.Errorf("eventkit: register %s version %q: %w", eventType, version, err)
	}
	ent := &typeEntry{eventType: eventType, version: version, goType: goType, codec: codec}
	for _, o := range opts {
		o(ent)
	}
	ent.decode = func(data []byte) (any, error) { return unmarshalAs[T](codec, data) }

	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.byName[eventType][version]; old != nil {
		if old.goType == goType && sameCodec(old.codec, codec) && old.schema == ent.schema {
			return nil
		}
		return fmt.Errorf("eventkit: register %s version %q: already registered as %s (%s)",
			eventType, version, old.goType, old.codec.ContentType())
	}
	if old := r.byGo[goType]; old != nil && old.eventType != eventType {
		return fmt.Errorf("eventkit: register %s version %q: Go type %s is already registered as event type %s",
			eventType, version, goType, old.eventType)
	}
	if r.byName[eventType] == nil {
		r.byName[eventType] = make(map[string]*typeEntry, 2)
	}
	r.byName[eventType][version] = ent
	r.byGo[goType] = ent
	return nil
}

// MustRegister is Register that panics on error, for package initialisation.
func MustRegister[T any](r *Registry, eventType, version string, codec Codec, opts ...RegisterOption) {
	if err := Register[T](r, eventType, version, codec, opts...); err != nil {
		panic(err)
	}
}

// NewTyped builds an event carrying v, whose Go type T must be registered in
// r: it sets Type, DataVersion, DataContentType and Data (and DataSchema if
// the registration has one), plus the id, time and source as New does. opts
// apply on top; WithDataVersion may pick another version registered for T.
func NewTyped[T any](r *Registry, v T, opts ...Option) (Event, error) {
	r = r.orDefault()
	goType := reflect.TypeFor[T]()
	r.mu.RLock()
	ent := r.byGo[goType]
	r.mu.RUnlock()
	if ent == nil {
		return Event{}, fmt.Errorf("%w: Go type %s is not registered", ErrUnknownType, goType)
	}
	e := New(ent.eventType, "", nil)
	e.DataVersion = ent.version
	for _, o := range opts {
		o(&e)
	}
	if e.DataVersion != ent.version || e.Type != ent.eventType {
		r.mu.RLock()
		other := r.byName[e.Type][e.DataVersion]
		r.mu.RUnlock()
		if other == nil || other.goType != goType {
			return Event{}, fmt.Errorf("%w: type %q version %q is not registered for Go type %s",
				ErrUnsupportedVersion, e.Type, e.DataVersion, goType)
		}
		ent = other
	}
	data, err := ent.codec.Marshal(v)
	if err != nil {
		return Event{}, fmt.Errorf("eventkit: encode %s payload of %s: %w", ent.codec.ContentType(), e.Type, err)
	}
	e.Data = data
	e.DataContentType = ent.codec.ContentType()
	if e.DataSchema == "" {
		e.DataSchema = ent.schema
	}
	return e, nil
}

// Decode decodes the payload of ev into the Go type T registered for its type
// and data version. Every error is a *DecodeError (so IsPermanent is true):
// it wraps ErrUnknownType, ErrUnsupportedVersion, ErrContentType, the codec's
// error, or says that T is not the type registered for the event.
func Decode[T any](r *Registry, ev Event) (T, error) {
	var zero T
	ent, err := r.orDefault().lookup(ev)
	if err != nil {
		return zero, err
	}
	if goType := reflect.TypeFor[T](); ent.goType != goType {
		return decodeUpcast[T](r.orDefault(), ev, ent)
	}
	v, err := unmarshalAs[T](ent.codec, ev.Data)
	if err != nil {
		return zero, payloadError(ev, err)
	}
	return v, nil
}

// Decode decodes the payload of ev into a value of the Go type registered for
// its type and data version (the same value Decode[T] returns, as an any).
// Errors are as for Decode.
func (r *Registry) Decode(ev Event) (any, error) {
	ent, err := r.orDefault().lookup(ev)
	if err != nil {
		return nil, err
	}
	v, err := ent.decode(ev.Data)
	if err != nil {
		return nil, payloadError(ev, err)
	}
	return v, nil
}

// Check reports whether r can decode ev's payload type, version and content
// type, without decoding it. The error is as for Decode.
func (r *Registry) Check(ev Event) error {
	_, err := r.orDefault().lookup(ev)
	return err
}

// Types lists the registrations, sorted by event type and version.
func (r *Registry) Types() []TypeInfo {
	r = r.orDefault()
	r.mu.RLock()
	out := make([]TypeInfo, 0, len(r.byName))
	for _, versions := range r.byName {
		for _, t := range versions {
			out = append(out, TypeInfo{Type: t.eventType, Version: t.version, GoType: t.goType,
				ContentType: t.codec.ContentType(), Schema: t.schema, UpcastTo: t.upcastTo})
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b TypeInfo) int {
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.Version, b.Version)
	})
	return out
}

func (r *Registry) lookup(ev Event) (*typeEntry, error) {
	r.mu.RLock()
	versions := r.byName[ev.Type]
	ent := versions[ev.DataVersion]
	var known []string
	if ent == nil && versions != nil {
		for v := range versions {
			known = append(known, fmt.Sprintf("%q", v))
		}
	}
	r.mu.RUnlock()
	switch {
	case versions == nil:
		return nil, payloadError(ev, fmt.Errorf("%w %q", ErrUnknownType, ev.Type))
	case ent == nil:
		slices.Sort(known)
		return nil, payloadError(ev, fmt.Errorf("%w: type %q version %q (registered versions: %s)",
			ErrUnsupportedVersion, ev.Type, ev.DataVersion, strings.Join(known, ", ")))
	case !contentTypeMatches(ev.DataContentType, ent.codec):
		return nil, payloadError(ev, fmt.Errorf("%w: type %q version %q has content type %q, the codec wants %q",
			ErrContentType, ev.Type, ev.DataVersion, ev.DataContentType, ent.codec.ContentType()))
	}
	return ent, nil
}

// sameCodec reports whether a and b are the same codec value, without
// panicking on codec types that cannot be compared.
func sameCodec(a, b Codec) bool {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() || !va.Comparable() || !vb.Comparable() {
		return false
	}
	return va.Equal(vb)
}

func payloadError(ev Event, err error) error {
	return &DecodeError{Format: "payload of " + ev.Type, Raw: ev.Data, Err: err}
}

// unmarshalAs decodes data into a new T. A pointer T (*Order,
// *examplepb.OrderCreated) is allocated and decoded into.
func unmarshalAs[T any](codec Codec, data []byte) (T, error) {
	var v T
	if t := reflect.TypeFor[T](); t.Kind() == reflect.Pointer {
		p := reflect.New(t.Elem())
		if err := codec.Unmarshal(data, p.Interface()); err != nil {
			return v, err
		}
		return p.Interface().(T), nil
	}
	if err := codec.Unmarshal(data, &v); err != nil {
		return v, err
	}
	return v, nil
}

// RegisterUpcaster registers fn as the conversion of the payloads of
// eventType from version from (Go type From, registered) to version to (Go
// type To, registered). Decode[T] then reads an event of an older version
// when T is the type of a newer one, applying the upcasters in a chain
// (1 to 2, 2 to 3, ...): a consumer that handles only the newest version
// still reads old events from an outbox backlog or a replay. Registry.Decode
// is unchanged (it returns the type of the event's own version).
//
// It returns an error if either version is not registered with the given Go
// type, if from already has an upcaster, or if the chain would loop.
func RegisterUpcaster[From, To any](r *Registry, eventType, from, to string, fn func(From) (To, error)) error {
	r = r.orDefault()
	if fn == nil {
		return fmt.Errorf("eventkit: upcaster %s %q to %q: nil function", eventType, from, to)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	src, dst := r.byName[eventType][from], r.byName[eventType][to]
	switch {
	case src == nil || src.goType != reflect.TypeFor[From]():
		return fmt.Errorf("eventkit: upcaster %s: version %q is not registered as %s", eventType, from, reflect.TypeFor[From]())
	case dst == nil || dst.goType != reflect.TypeFor[To]():
		return fmt.Errorf("eventkit: upcaster %s: version %q is not registered as %s", eventType, to, reflect.TypeFor[To]())
	case src.upcast != nil:
		return fmt.Errorf("eventkit: upcaster %s: version %q already upcasts to %q", eventType, from, src.upcastTo)
	}
	for e := dst; e != nil; e = r.byName[eventType][e.upcastTo] {
		if e == src {
			return fmt.Errorf("eventkit: upcaster %s %q to %q: the chain loops", eventType, from, to)
		}
		if e.upcast == nil {
			break
		}
	}
	src.upcastTo = to
	src.upcast = func(v any) (any, error) { return fn(v.(From)) }
	return nil
}

// decodeUpcast decodes ev as its own version's type and upcasts it along
// the registered chain until it reaches T.
func decodeUpcast[T any](r *Registry, ev Event, ent *typeEntry) (T, error) {
	var zero T
	want := reflect.TypeFor[T]()
	v, err := ent.decode(ev.Data)
	if err != nil {
		return zero, payloadError(ev, err)
	}
	for seen := 0; ent.goType != want; seen++ {
		r.mu.RLock()
		next := r.byName[ev.Type][ent.upcastTo]
		r.mu.RUnlock()
		if ent.upcast == nil || next == nil || seen > 1000 {
			return zero, payloadError(ev, fmt.Errorf("event type %s version %q is registered as %s, not %s, and no upcaster leads there",
				ev.Type, ev.DataVersion, ent.goType, want))
		}
		if v, err = ent.upcast(v); err != nil {
			return zero, payloadError(ev, fmt.Errorf("upcast %s from version %q to %q: %w", ev.Type, ent.version, next.version, err))
		}
		ent = next
	}
	return v.(T), nil
}
