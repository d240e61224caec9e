// Package redact hides credentials before anything is shown: it is the one
// redactor of eventkit, used for logs, errors, help texts, benchmark titles
// and every other line a command prints.
//
// URL keeps what helps an operator (scheme, host, port, path, user name) and
// replaces with Mask what authenticates: the password of the user info, a
// user info that is a bare token (nats://TOKEN@host), and the value of every
// query parameter whose name looks like a secret (password, token, secret,
// key, auth, credential, signature, ...). A value that does not parse as a URL
// (a password such as "s3%cret" that breaks URL parsing, or one whose '/',
// '?' or '#' moves part of it out of the user info) is shown with everything
// before its last '@' and its whole query masked, never as it was given.
//
// Redacting at each call site is the rule; Scrubber is the safety net behind
// it: it removes the secrets of given values from any text (third-party
// error messages, panics) and wraps a command's output streams.
package redact

import (
	"io"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// Mask replaces every hidden part.
const Mask = "xxxxx"

// tokenSchemes are the schemes whose user info, when it has no password, is
// a token rather than a user name.
var tokenSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

// secretKey reports whether a query parameter or key=value key names a
// secret.
func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, s := range []string{"pass", "pwd", "token", "secret", "key", "auth", "cred", "sig", "jwt", "seed", "session"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// kvSecret matches key=value pairs with a secret-like key in text that is not
// a URL (libpq's "host=x password=y", a DSN's "?password=y").
var kvSecret = regexp.MustCompile(`(?i)([A-Za-z_.-]*(?:pass|pwd|token|secret|key|auth|cred|sig|jwt|seed|session)[A-Za-z_.-]*)\s*=\s*('[^']*'|"[^"]*"|[^\s&;,]*)`)

// URL returns raw with its credentials replaced by Mask (see the package
// doc). A comma-separated list of URLs (NATS server lists) is redacted item
// by item. Text that is not a URL has its secret-like key=value pairs and
// anything before an '@' masked.
func URL(raw string) string {
	if strings.Count(raw, "://") > 1 && strings.Contains(raw, ",") {
		parts := strings.Split(raw, ",")
		for i, p := range parts {
			parts[i] = URL(p)
		}
		return strings.Join(parts, ",")
	}
	scheme, rest, isURL := strings.Cut(raw, "://")
	if !isURL {
		return plain(raw)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || strings.ContainsAny(u.Path+u.RawQuery+u.Fragment, "@") {
		return lenient(scheme, rest)
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), Mask)
		} else if tokenSchemes[strings.ToLower(u.Scheme)] && u.User.Username() != "" {
			u.User = url.User(Mask)
		}
	}
	u.RawQuery = query(u.RawQuery)
	u.Fragment, u.RawFragment = "", ""
	s := u.String()
	// url.URL.String escapes the mask's neighbours; it has none to escape.
	return s
}

// query masks the values of secret-like parameters, keeping the order.
func query(q string) string {
	if q == "" {
		return ""
	}
	parts := strings.Split(q, "&")
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if secretKey(k) {
			parts[i] = url.QueryEscape(k) + "=" + Mask
		}
	}
	return strings.Join(parts, "&")
}

// lenient shows an unparseable URL: the scheme, Mask for everything before
// the last '@', what follows up to a '?' or '#', and Mask for a query.
func lenient(scheme, rest string) string {
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString("://")
	hasQuery := false
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		b.WriteString(Mask)
		b.WriteByte('@')
		// anything before the last '@' may be part of the password,
		// including a '?' or '#' in it
		hasQuery = strings.ContainsAny(rest[:i], "?#")
		rest = rest[i+1:]
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest, hasQuery = rest[:i], true
	}
	b.WriteString(rest)
	if hasQuery {
		b.WriteString("?" + Mask)
	}
	return b.String()
}

// plain redacts text that is not a URL.
func plain(s string) string {
	if i := strings.LastIndexByte(s, '@'); i >= 0 && !strings.ContainsAny(s[:i], " \t\n") {
		s = Mask + s[i:] // user:pass@tcp(host)/db
	}
	return kvSecret.ReplaceAllString(s, "${1}="+Mask)
}

// Secrets returns the parts of raw that URL hides, as given and
// percent-decoded, for a Scrubber.
func Secrets(raw string) []string {
	var out []string
	add := func(s string) {
		if len(s) < 3 || s == Mask {
			return // too short to replace without mangling other text
		}
		out = append(out, s)
		if d, err := url.PathUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
		if d, err := url.QueryUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
	}
	for _, item := range strings.Split(raw, ",") {
		scheme, rest, isURL := strings.Cut(item, "://")
		if !isURL {
			rest = item
		}
		if i := strings.LastIndexByte(rest, '@'); i >= 0 {
			ui := rest[:i]
			user, pw, hasPW := strings.Cut(ui, ":")
			switch {
			case hasPW:
				add(pw)
				// A '/', '?' or '#' in a password makes URL parsers
				// (and the errors of client libraries) split it: hide
				// the pieces too.
				for _, piece := range strings.FieldsFunc(pw, func(r rune) bool { return strings.ContainsRune("/?#:", r) }) {
					if len(piece) >= 4 {
						add(piece)
					}
				}
			case tokenSchemes[strings.ToLower(scheme)]:
				add(user) // a bare token
			}
		}
		for _, m := range kvSecret.FindAllStringSubmatch(item, -1) {
			add(strings.Trim(m[2], `'"`))
		}
	}
	return out
}

// Scrubber removes known secrets from text.
type Scrubber struct {
	r *strings.Replacer
}

// NewScrubber returns a Scrubber for the secrets of values (see Secrets).
func NewScrubber(values ...string) *Scrubber {
	var secrets []string
	for _, v := range values {
		secrets = append(secrets, Secrets(v)...)
	}
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, Mask)
	}
	return &Scrubber{r: strings.NewReplacer(pairs...)}
}

// String returns text with every secret replaced by Mask.
func (s *Scrubber) String(text string) string { return s.r.Replace(text) }

// Writer returns a writer that scrubs what it writes to w. Each Write is
// scrubbed on its own: a secret split across two writes is not found, so
// wrap writers that get whole lines or records (loggers, fmt.Fprint*).
func (s *Scrubber) Writer(w io.Writer) io.Writer { return &writer{s: s, w: w} }

type writer struct {
	mu sync.Mutex
	s  *Scrubber
	w  io.Writer
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := io.WriteString(w.w, w.s.r.Replace(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Err returns err with the secrets of values (see Secrets) removed from its
// message; errors.Is and errors.As still see err. It returns nil for nil.
// Use it on errors of client libraries that quote the URL they were given
// (net/url's parse errors do, password included).
func Err(err error, values ...string) error {
	if err == nil {
		return nil
	}
	msg := NewScrubber(values...).String(err.Error())
	if msg == err.Error() {
		return err
	}
	return &scrubbed{err: err, msg: msg}
}

type scrubbed struct {
	err error
	msg string
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }
