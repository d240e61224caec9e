package broker

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
func MessageSize(body []byte, headers map[string]string) int {
	n := len(body)
	for k, v := range headers {
		n += len(k) + len(v)
	}
	return n
}

// CheckSize is the consume-side size check every adapter runs before
// decoding a message: nil if size <= limit (or limit <= 0); otherwise a
// *eventkit.DecodeError whose Err is a *eventkit.SizeError (so errors.Is
// with eventkit.ErrDecode, eventkit.ErrTooLarge and eventkit.ErrInvalidEvent
// all hold), whose Raw is at most the first TooLargeKeep bytes of body and
// whose Headers are the message headers only when they are small (at most
// 4 KiB in all). id is the event id if the adapter can read it cheaply
// (a header), else "". The consumer runtime dead-letters such a delivery
// as undecodable with the size error as its reason, and it is never
// redelivered.
func CheckSize(format, id string, body []byte, headers map[string]string, size, limit int, where string) error {
	if limit <= 0 || size <= limit {
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
