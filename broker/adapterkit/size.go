package adapterkit

import (
	"github.com/eventkit/eventkit"
)

// TooLargeKeep is how many bytes of an oversized message's body the
// *eventkit.DecodeError of CheckSize keeps in Raw (so that its dead letter
// shows what the message was without carrying it whole, and fits any
// dead-letter topic's limit).
const TooLargeKeep = 1024

// tooLargeHeaders is the largest total size (keys plus values) of the
// headers CheckSize keeps; larger header sets are dropped whole.
const tooLargeHeaders = 4 << 10

// MessageSize is the size an adapter compares with its limit on consume:
// the body plus every header key and value.
//
// Publish checks eventkit.Event.Size (attribute values, extension names
// and values, data), which does not count the binding's header names
// ("ce-id", "cloudEvents:type", ...). So that every event Publish accepted
// is accepted on consume, CheckSize allows for them: a message is refused
// only when its size is over limit + 64 + 16 per header (see Allowance).
func MessageSize(body []byte, headers map[string]string) int {
	n := len(body)
	for k, v := range headers {
		n += len(k) + len(v)
	}
	return n
}

// Allowance is how many bytes over its limit a message of nHeaders headers
// may be on consume: the header names a binding adds to what
// eventkit.Event.Size counts (at most 16 bytes each), and 64 for the
// attributes that Size counts short (specversion).
func Allowance(nHeaders int) int { return 64 + 16*nHeaders }

// CheckSize is the consume-side size check every adapter runs before
// decoding a message: nil if size <= limit + Allowance(nHeaders) (or limit
// <= 0); otherwise a
// *eventkit.DecodeError whose Err is a *eventkit.SizeError (so errors.Is
// with eventkit.ErrDecode, eventkit.ErrTooLarge and eventkit.ErrInvalidEvent
// all hold), whose Raw is at most the first TooLargeKeep bytes of body and
// whose Headers are the message headers only when they are small (at most
// 4 KiB in all). id is the event id if the adapter can read it cheaply
// (a header), else "". The consumer runtime dead-letters such a delivery
// as undecodable with the size error as its reason, and it is never
// redelivered.
func CheckSize(format, id string, body []byte, headers map[string]string, size, nHeaders, limit int, where string) error {
	if limit <= 0 || size <= limit+Allowance(nHeaders) {
		return nil
	}
	raw := body
	if len(raw) > TooLargeKeep {
		raw = raw[:TooLargeKeep]
	}
	raw = append([]byte(nil), raw...) // do not pin the whole message
	var hs map[string]string
	if MessageSize(nil, headers) <= tooLargeHeaders && len(headers) > 0 {
		hs = make(map[string]string, len(headers))
		for k, v := range headers {
			hs[k] = v
		}
	}
	return &eventkit.DecodeError{
		Format:  format,
		Raw:     raw,
		Headers: hs,
		Err:     &eventkit.SizeError{ID: id, Size: size, Limit: limit, Where: where + ", on consume"},
	}
}
