package eventkit

import (
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"
)

// Binding describes how an event maps onto a protocol's message headers in
// CloudEvents binary content mode: every attribute becomes a header named
// Prefix+attribute, datacontenttype goes in ContentTypeKey (or in
// Prefix+"datacontenttype" with ContentTypeAttribute), and the payload is the
// message body unchanged. docs/cloudevents.md lists each binding's mapping
// with its spec references.
//
// A Binding is comparable; fields added later keep the zero value meaning
// what it meant before.
type Binding struct {
	Name           string // "nats", "kafka", "amqp", ...
	Prefix         string // "ce-", "ce_", "cloudEvents:"
	ContentTypeKey string // "content-type"; empty when the protocol has its own content-type field

	// AltPrefix is a second prefix Decode accepts ("cloudEvents_" beside
	// "cloudEvents:" for AMQP). Headers never writes it; when both prefixes
	// carry the same attribute, Prefix wins.
	AltPrefix string
	// ContentTypeAttribute makes Headers write datacontenttype as
	// Prefix+"datacontenttype" (the NATS binding) rather than in
	// ContentTypeKey; Decode reads both, the prefixed attribute winning.
	ContentTypeAttribute bool
	// PercentEncode makes Headers percent-encode every value as the HTTP and
	// NATS bindings require (space, '"', '%' and every byte outside
	// printable ASCII become %XX) and Decode undo it (a double-quoted value
	// is unquoted first). Decode keeps a value that holds raw non-ASCII bytes
	// as it is (what producers that do not encode, such as the Go SDK,
	// write), and keeps a '%' not followed by two hex digits; a value whose
	// percent-decoding is not valid UTF-8 is rejected, as the spec requires.
	PercentEncode bool
}

// The bindings of the CloudEvents 1.0 protocol specifications.
var (
	// NATSBinding is the NATS protocol binding (working draft 1.0.3): headers
	// "ce-id", ..., "ce-datacontenttype", values percent-encoded. Decode also
	// reads "content-type", which the Go SDK's older NATS bindings write.
	NATSBinding = Binding{Name: "nats", Prefix: "ce-", ContentTypeKey: "content-type", ContentTypeAttribute: true, PercentEncode: true}
	// KafkaBinding is the Kafka protocol binding (headers "ce_id", ...; "content-type").
	KafkaBinding = Binding{Name: "kafka", Prefix: "ce_", ContentTypeKey: "content-type"}
	// AMQPBinding is the AMQP binding: application properties
	// "cloudEvents:id", ..., the prefix of the released binding (1.0.2) that
	// every CloudEvents SDK reads; Decode also reads "cloudEvents_" (the
	// working draft allows both and says consumers SHOULD understand both).
	// The content type is the message's content-type property, set by the
	// adapter.
	AMQPBinding = Binding{Name: "amqp", Prefix: "cloudEvents:", AltPrefix: "cloudEvents_"}
	// AMQPUnderscoreBinding is AMQPBinding writing the "cloudEvents_" prefix
	// of the working draft, for readers that cannot take ':' in a property
	// name (JMS selectors) or that know only that prefix (earlier eventkit
	// releases). It reads both prefixes too.
	AMQPUnderscoreBinding = Binding{Name: "amqp", Prefix: "cloudEvents_", AltPrefix: "cloudEvents:"}
	// RedisBinding is used for Redis Streams entries, which have no CloudEvents
	// binding of their own: fields "ce_id", ... like Kafka headers.
	RedisBinding = KafkaBinding
)

// TimeFormat is the format of the time attribute in headers and JSON (RFC 3339
// with nanoseconds, as CloudEvents requires).
const TimeFormat = time.RFC3339Nano

// Headers calls set for each header that carries e in binary mode. The payload
// (e.Data) is the message body.
func (b Binding) Headers(e Event, set func(key, value string)) {
	p := b.Prefix
	n := headerNamesFor(p) // Prefix+attribute, without allocating for the standard prefixes
	v := b.HeaderValue
	set(n.specversion, SpecVersion)
	set(n.id, v(e.ID))
	set(n.source, v(e.Source))
	set(n.typ, v(e.Type))
	if !e.Time.IsZero() {
		set(n.time, e.Time.UTC().Format(TimeFormat))
	}
	if e.Subject != "" {
		set(n.subject, v(e.Subject))
	}
	if e.DataVersion != "" {
		set(n.dataversion, v(e.DataVersion))
	}
	if e.DataSchema != "" {
		set(n.dataschema, v(e.DataSchema))
	}
	if e.DataContentType != "" {
		switch {
		case b.ContentTypeAttribute:
			set(n.datacontenttype, v(e.DataContentType))
		case b.ContentTypeKey != "":
			set(b.ContentTypeKey, v(e.DataContentType))
		}
	}
	for k, x := range e.Extensions {
		if reserved[k] || k == "specversion" {
			continue // an extension must not override an attribute set above
		}
		set(p+k, v(x))
	}
}

// HeaderValue is s as Headers writes it: percent-encoded with PercentEncode,
// otherwise unchanged. It allocates only when s needs encoding.
func (b Binding) HeaderValue(s string) string {
	if !b.PercentEncode {
		return s
	}
	return percentEncode(s)
}

// HeaderCount is the number of headers Headers sets for e (to size maps).
func (b Binding) HeaderCount(e Event) int { return 9 + len(e.Extensions) }

// Decode reads an event in binary mode from headers and body. Headers that do
// not start with the prefix (or AltPrefix, and are not the content-type key)
// are ignored. contentType is the protocol's own content type field when
// ContentTypeKey is empty (AMQP), otherwise "". The body is used as e.Data
// without copying. A missing or malformed required attribute gives a
// *DecodeError that keeps the body and headers.
func (b Binding) Decode(headers iter.Seq2[string, string], contentType string, body []byte) (Event, error) {
	var d bindingDecoder
	d.e.DataContentType = contentType
	for k, v := range headers {
		if d.err != nil {
			break
		}
		d.primary(&b, k, v)
	}
	if b.AltPrefix != "" && d.err == nil {
		// A second pass, so that Prefix wins whatever the headers' order.
		for k, v := range headers {
			if d.err != nil {
				break
			}
			d.alt(&b, k, v)
		}
	}
	e, err := d.finish()
	if err != nil {
		h := map[string]string{}
		for k, v := range headers {
			h[k] = v
		}
		return Event{}, &DecodeError{Format: b.Name + " binary", Raw: body, Headers: h, Err: err}
	}
	e.Data = body
	return e, nil
}

// DecodeHeader is Decode for headers held as a multi-valued map (NATS,
// net/http), reading the first value of each key. It is the same decoder
// without the iterator, so that a delivery's event does not escape to the
// heap through the loop's closure.
func (b Binding) DecodeHeader(headers map[string][]string, contentType string, body []byte) (Event, error) {
	var d bindingDecoder
	d.e.DataContentType = contentType
	for k, vs := range headers {
		if d.err != nil {
			break
		}
		if len(vs) > 0 {
			d.primary(&b, k, vs[0])
		}
	}
	if b.AltPrefix != "" && d.err == nil {
		for k, vs := range headers {
			if d.err != nil {
				break
			}
			if len(vs) > 0 {
				d.alt(&b, k, vs[0])
			}
		}
	}
	e, err := d.finish()
	if err != nil {
		h := make(map[string]string, len(headers))
		for k, vs := range headers {
			if len(vs) > 0 {
				h[k] = vs[0]
			}
		}
		return Event{}, &DecodeError{Format: b.Name + " binary", Raw: body, Headers: h, Err: err}
	}
	e.Data = body
	return e, nil
}

// primary applies header k of Decode's first pass.
func (d *bindingDecoder) primary(b *Binding, k, v string) {
	if b.ContentTypeKey != "" && strings.EqualFold(k, b.ContentTypeKey) {
		d.keyContentType, d.haveKeyContentType = b.value(k, v, &d.err), true
		return
	}
	if hasPrefixFold(k, b.Prefix) {
		d.set(b, k, k[len(b.Prefix):], v, true)
	}
}

// alt applies header k of Decode's second pass (AltPrefix).
func (d *bindingDecoder) alt(b *Binding, k, v string) {
	if hasPrefixFold(k, b.AltPrefix) && !hasPrefixFold(k, b.Prefix) {
		d.set(b, k, k[len(b.AltPrefix):], v, false)
	}
}

// DecodeTyped is Decode for protocols whose header values are typed (AMQP
// application properties, an amqp091-go Table): strings and byte slices are
// used as they are, booleans and integers in their canonical CloudEvents
// form ("true", "42"), a time.Time in RFC 3339 (so a "time" sent as a native
// AMQP timestamp is read, as the AMQP binding requires), other values
// formatted with fmt; nil values are skipped.
func (b Binding) DecodeTyped(headers iter.Seq2[string, any], contentType string, body []byte) (Event, error) {
	return b.Decode(func(yield func(string, string) bool) {
		for k, v := range headers {
			s, ok := typedHeaderString(v)
			if ok && !yield(k, s) {
				return
			}
		}
	}, contentType, body)
}

func typedHeaderString(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case []byte:
		return string(x), true
	case bool:
		return strconv.FormatBool(x), true
	case int:
		return strconv.FormatInt(int64(x), 10), true
	case int8:
		return strconv.FormatInt(int64(x), 10), true
	case int16:
		return strconv.FormatInt(int64(x), 10), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case uint:
		return strconv.FormatUint(uint64(x), 10), true
	case uint8:
		return strconv.FormatUint(uint64(x), 10), true
	case uint16:
		return strconv.FormatUint(uint64(x), 10), true
	case uint32:
		return strconv.FormatUint(uint64(x), 10), true
	case uint64:
		return strconv.FormatUint(x, 10), true
	case time.Time:
		return x.Format(TimeFormat), true
	case *time.Time:
		if x == nil {
			return "", false
		}
		return x.Format(TimeFormat), true
	case fmt.Stringer:
		return x.String(), true
	default:
		return fmt.Sprint(x), true
	}
}

func hasPrefixFold(k, prefix string) bool {
	return len(k) > len(prefix) && strings.EqualFold(k[:len(prefix)], prefix)
}

// value undoes the binding's header value encoding.
func (b *Binding) value(k, v string, err *error) string {
	if !b.PercentEncode {
		return v
	}
	s, e := percentDecode(v)
	if e != nil && *err == nil {
		*err = fmt.Errorf("header %s: %w", k, e)
	}
	return s
}

// bindingDecoder collects the attributes of one event in binary mode.
type bindingDecoder struct {
	e                  Event
	spec, time         string
	seen               uint16 // attributes set from the primary prefix
	attrContentType    string
	haveAttrCT         bool
	keyContentType     string
	haveKeyContentType bool
	primaryExt         map[string]bool
	err                error
}

const (
	seenSpec uint16 = 1 << iota
	seenID
	seenSource
	seenType
	seenSubject
	seenTime
	seenDataVersion
	seenDataSchema
	seenContentType
)

// set applies header k (attribute name, value v); primary tells whether k
// has the binding's Prefix rather than AltPrefix.
func (d *bindingDecoder) set(b *Binding, k, name, v string, primary bool) {
	name = strings.ToLower(name)
	var dst *string
	var bit uint16
	switch name {
	case "specversion":
		dst, bit = &d.spec, seenSpec
	case "id":
		dst, bit = &d.e.ID, seenID
	case "source":
		dst, bit = &d.e.Source, seenSource
	case "type":
		dst, bit = &d.e.Type, seenType
	case "subject":
		dst, bit = &d.e.Subject, seenSubject
	case "time":
		dst, bit = &d.time, seenTime
	case "dataversion":
		dst, bit = &d.e.DataVersion, seenDataVersion
	case "dataschema":
		dst, bit = &d.e.DataSchema, seenDataSchema
	case "datacontenttype":
		dst, bit = &d.attrContentType, seenContentType
	default:
		if !ValidExtensionName(name) {
			return
		}
		if primary && b.AltPrefix != "" { // only a second pass needs to know
			if d.primaryExt == nil {
				d.primaryExt = make(map[string]bool, 4)
			}
			d.primaryExt[name] = true
		} else if d.primaryExt[name] {
			return
		}
		if d.e.Extensions == nil {
			d.e.Extensions = make(map[string]string, 4)
		}
		d.e.Extensions[name] = b.value(k, v, &d.err)
		return
	}
	if primary {
		d.seen |= bit
	} else if d.seen&bit != 0 {
		return
	}
	*dst = b.value(k, v, &d.err)
	if bit == seenContentType {
		d.haveAttrCT = true
	}
}

func (d *bindingDecoder) finish() (Event, error) {
	if d.err != nil {
		return Event{}, d.err
	}
	e := d.e
	switch {
	case d.haveAttrCT:
		e.DataContentType = d.attrContentType
	case d.haveKeyContentType:
		e.DataContentType = d.keyContentType
	}
	if d.time != "" {
		t, err := parseTime(d.time)
		if err != nil {
			return Event{}, fmt.Errorf("attribute time: %w", err)
		}
		e.Time = t
	}
	if err := checkRequired(d.spec, e); err != nil {
		return Event{}, err
	}
	return e, nil
}

func checkRequired(spec string, e Event) error {
	switch {
	case spec == "":
		return errors.New("attribute specversion is missing (not a CloudEvent)")
	case spec != SpecVersion:
		return fmt.Errorf("specversion %q is not supported (want %q)", spec, SpecVersion)
	case e.ID == "":
		return errors.New("attribute id is missing")
	case e.Source == "":
		return errors.New("attribute source is missing")
	case e.Type == "":
		return errors.New("attribute type is missing")
	}
	return nil
}

// MapHeaders adapts a map to the iterator Decode takes.
func MapHeaders(m map[string]string) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for k, v := range m {
			if !yield(k, v) {
				return
			}
		}
	}
}
