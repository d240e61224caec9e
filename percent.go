package eventkit

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// percentEncode encodes s as the HTTP and NATS bindings require for header
// values (HTTP binding 3.1.3.2, NATS binding 3.1.3.2): space, '"', '%' and
// every byte outside printable ASCII (U+0021 to U+007E) become %XX with
// upper-case hex digits, each byte of a character's UTF-8 encoding in turn.
// Invalid UTF-8 is first replaced by U+FFFD, so the result always decodes.
func percentEncode(s string) string {
	i := 0
	for i < len(s) && !needsPercent(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	const hex = "0123456789ABCDEF"
	var sb strings.Builder
	sb.Grow(len(s) + 2*(len(s)-i) + 8)
	for j := 0; j < len(s); j++ {
		c := s[j]
		if needsPercent(c) {
			sb.WriteByte('%')
			sb.WriteByte(hex[c>>4])
			sb.WriteByte(hex[c&15])
			continue
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

func needsPercent(c byte) bool { return c <= ' ' || c >= 0x7f || c == '"' || c == '%' }

var errPercentUTF8 = errors.New("percent-decoded value is not valid UTF-8")

// percentDecode undoes percentEncode as the bindings require of a receiver:
// a double-quoted value (RFC 7230 section 3.2.6, written by older producers)
// is unquoted first, then one round of percent-decoding is done, accepting
// lower-case hex and needlessly encoded characters; a decoded byte sequence
// that is not valid UTF-8 (an overlong "%C0%A0") is an error. A value that
// holds raw bytes outside printable ASCII was not percent-encoded (the Go SDK
// writes raw UTF-8): it is kept as it is, invalid UTF-8 replaced by U+FFFD.
// A '%' not followed by two hex digits is kept literally.
func percentDecode(v string) (string, error) {
	if n := len(v); n >= 2 && v[0] == '"' && v[n-1] == '"' {
		v = unquote(v[1 : n-1])
	}
	pct := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= utf8.RuneSelf || c < ' ' || c == 0x7f {
			return strings.ToValidUTF8(v, "\uFFFD"), nil
		}
		if c == '%' {
			pct = true
		}
	}
	if !pct {
		return v, nil
	}
	b := make([]byte, 0, len(v))
	decoded := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '%' && i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
			b = append(b, unhex(v[i+1])<<4|unhex(v[i+2]))
			i += 2
			decoded = true
			continue
		}
		b = append(b, c)
	}
	if decoded && !utf8.Valid(b) {
		return "", errPercentUTF8
	}
	return string(b), nil
}

// unquote removes the backslash escapes of an RFC 7230 quoted-string's
// content.
func unquote(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var sb strings.Builder
	sb.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
