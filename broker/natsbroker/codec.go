package natsbroker

import (
	"hash/fnv"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
)

// The headers of the CloudEvents NATS protocol binding (binary content mode),
// as eventkit.NATSBinding writes them (values percent-encoded by
// eventkit.NATSBinding.HeaderValue). They are constants here so that
// encoding an event does not build every key anew.
const (
	hSpecVersion = "ce-specversion"
	hID          = "ce-id"
	hSource      = "ce-source"
	hType        = "ce-type"
	hTime        = "ce-time"
	hSubject     = "ce-subject"
	hDataVersion = "ce-dataversion"
	hDataSchema  = "ce-dataschema"
	hContentType = "ce-datacontenttype"  // the draft binding's name; the decoder also reads "content-type"
	hMsgID       = jetstream.MsgIDHeader // "Nats-Msg-Id": JetStream's dedupe key
)

// arena holds the header values and time strings of one Publish call, so
// that encoding an event allocates only its header map. Nothing in it is
// modified once handed out.
type arena struct {
	vals []string
	buf  []byte
}

func newArena(events []eventkit.Event) *arena {
	n := 0
	for i := range events {
		n += eventkit.NATSBinding.HeaderCount(events[i]) + 1
	}
	return &arena{vals: make([]string, 0, n), buf: make([]byte, 0, len(events)*len("2006-01-02T15:04:05.999999999Z07:00"))}
}

func (a *arena) time(t time.Time) string {
	start := len(a.buf)
	a.buf = t.UTC().AppendFormat(a.buf, eventkit.TimeFormat)
	if len(a.buf) == start {
		return ""
	}
	return unsafe.String(&a.buf[start], len(a.buf)-start)
}

// encodeHeaders returns the NATS headers carrying e in CloudEvents binary
// mode (the same set eventkit.NATSBinding.Headers writes) plus Nats-Msg-Id =
// e.ID unless noMsgID. With an arena (nil: allocate) it allocates the map
// and one string per extension key only.
func encodeHeaders(e *eventkit.Event, noMsgID bool, a *arena) nats.Header {
	h, _ := encodeHeadersSize(e, noMsgID, a)
	return h
}

// encodeHeadersSize is encodeHeaders also returning encodedSize(h, e.Data),
// summed while the headers are set rather than in a second pass over the map.
func encodeHeadersSize(e *eventkit.Event, noMsgID bool, a *arena) (nats.Header, int) {
	n := 6 + len(e.Extensions) // specversion id source type time msgid
	if e.Subject != "" {
		n++
	}
	if e.DataVersion != "" {
		n++
	}
	if e.DataSchema != "" {
		n++
	}
	if e.DataContentType != "" {
		n++
	}
	if a == nil {
		a = &arena{vals: make([]string, 0, n)}
	}
	h := make(nats.Header, n)
	size := len("NATS/1.0\r\n") + 2 + len(e.Data)
	set := func(k, v string) {
		if k != hMsgID { // the dedupe key stays the raw id
			v = eventkit.NATSBinding.HeaderValue(v) // no allocation for plain ASCII
		}
		size += len(k) + 2 + len(v) + 2
		a.vals = append(a.vals, v)
		i := len(a.vals) - 1
		h[k] = a.vals[i : i+1 : i+1]
	}
	set(hSpecVersion, eventkit.SpecVersion)
	set(hID, e.ID)
	set(hSource, e.Source)
	set(hType, e.Type)
	set(hTime, a.time(e.Time))
	if e.Subject != "" {
		set(hSubject, e.Subject)
	}
	if e.DataVersion != "" {
		set(hDataVersion, e.DataVersion)
	}
	if e.DataSchema != "" {
		set(hDataSchema, e.DataSchema)
	}
	if e.DataContentType != "" {
		set(hContentType, e.DataContentType)
	}
	for k, v := range e.Extensions {
		set("ce-"+k, v)
	}
	if !noMsgID {
		set(hMsgID, e.ID)
	}
	return h, size
}

// encodedSize is the size NATS counts against max_payload: the encoded
// header block ("NATS/1.0\r\n", "key: value\r\n" per value, "\r\n") plus the
// body.
func encodedSize(h nats.Header, body []byte) int {
	n := len("NATS/1.0\r\n") + 2
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n + len(body)
}

// decode reads an event from a JetStream message in binary mode. A message
// that is not a CloudEvent gives a *eventkit.DecodeError keeping the body and
// headers.
func decode(h nats.Header, body []byte) (eventkit.Event, error) {
	return eventkit.NATSBinding.DecodeHeader(h, "", body)
}

// sanitizeName turns a topic or group name (letters, digits, '.', '_', '-';
// see broker.ValidateName) into a JetStream stream or consumer name, which may
// not contain '.'. Names without a dot are used as they are; in others every
// '.' becomes '_' and a hash of the original name is appended, so that "a.b"
// and "a_b" do not meet.
func sanitizeName(name string) string {
	if !strings.Contains(name, ".") {
		return name
	}
	f := fnv.New32a()
	_, _ = f.Write([]byte(name))
	var sb strings.Builder
	sb.Grow(len(name) + 9)
	sb.WriteString(strings.ReplaceAll(name, ".", "_"))
	sb.WriteByte('_')
	s := strconv.FormatUint(uint64(f.Sum32()), 16)
	for i := len(s); i < 8; i++ {
		sb.WriteByte('0')
	}
	sb.WriteString(s)
	return sb.String()
}

// maxTypeToken bounds the part of a NATS subject taken from the event type.
const maxTypeToken = 128

// typeToken returns the event type as the last tokens of a NATS subject
// ("order.created" stays "order.created"), so that tools can filter a stream
// by type. Bytes a subject may not hold (anything but letters, digits, '_',
// '-' and '.') become '_'; so do dots that would leave an empty token. The
// token is cut to maxTypeToken bytes. It is only a routing hint: the type
// travels exactly in the ce-type header.
func typeToken(t string) string {
	if t == "" {
		return "_"
	}
	if len(t) <= maxTypeToken && plainSubject(t) {
		return t
	}
	if len(t) > maxTypeToken {
		t = t[:maxTypeToken]
	}
	b := []byte(t)
	for i, c := range b {
		if !subjectByte(c) && c != '.' {
			b[i] = '_'
		}
	}
	if !plainSubject(string(b)) { // empty tokens remain: no dots at all
		for i, c := range b {
			if c == '.' {
				b[i] = '_'
			}
		}
	}
	return string(b)
}

func subjectByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// plainSubject reports whether s is made of subject bytes in non-empty
// dot-separated tokens.
func plainSubject(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if s[i-1] == '.' {
				return false
			}
			continue
		}
		if !subjectByte(c) {
			return false
		}
	}
	return true
}

// deliveredCount returns the delivery count (NumDelivered) from a JetStream
// ack subject without allocating:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>                 (v1, 9 tokens)
//	$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<rnd>] (v2, 11+ tokens)
func deliveredCount(reply string) (int, bool) {
	if !strings.HasPrefix(reply, "$JS.ACK.") {
		return 0, false
	}
	var starts [13]int
	n := 0
	start := 0
	for i := 0; i <= len(reply); i++ {
		if i == len(reply) || reply[i] == '.' {
			if n < len(starts) {
				starts[n] = start
			}
			n++
			start = i + 1
		}
	}
	var pos int
	switch {
	case n == 9:
		pos = 4
	case n >= 11 && n <= 12:
		pos = 6
	default:
		return 0, false
	}
	tok := reply[starts[pos]:]
	if j := strings.IndexByte(tok, '.'); j >= 0 {
		tok = tok[:j]
	}
	v, err := strconv.Atoi(tok)
	if err != nil || v < 1 {
		return 0, false
	}
	return v, true
}
