// Package console is the operator web console of `eventkit console`:
// server-rendered pages (html/template, embedded assets, no network
// access needed) over one database's outbox, inbox and dead-letter tables
// and one broker.
//
// Guarantees: every mutating action (replay, skip, purge, requeue) is a POST
// that carries the page's CSRF token, is shown on a confirmation page first
// and runs only when that page is submitted, and is logged (who, what, how
// many) through slog. The console serves a token-protected listener when
// Config.Token is set (HTTP basic auth with the token as password, or
// "Authorization: Bearer <token>"); the command refuses to bind a
// non-loopback address without one. Bad input and unreachable stores or
// brokers are shown as a message on the page, never a stack trace.
package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventkit/eventkit/audit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/outbox"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures a console.
type Config struct {
	// DB is the database of the outbox, the inbox and the dead letters.
	DB      *sql.DB
	Dialect sqlinbox.Dialect
	// Outbox is the outbox store (status, requeue).
	Outbox outbox.Store
	// Pool is set for PostgreSQL: the overview then shows the relay's
	// leadership lock and the CDC slot.
	Pool *pgxpool.Pool
	// OutboxTable, InboxTable and DeadLetterTable default as in package
	// audit.
	OutboxTable, InboxTable, DeadLetterTable string
	// Broker opens the broker (called again after a failure). Nil: no
	// broker (the broker's side is not shown, replays are refused).
	Broker func(ctx context.Context) (broker.Broker, error)
	// Topics are searched by the tracer and shown in the overview besides
	// those the outbox wrote.
	Topics []string
	// Groups are consumer groups whose lag the overview asks a broker
	// that reports lag per group (Kafka, RabbitMQ, Redis Streams) for,
	// besides the inbox table's consumers and the dead letters' groups.
	Groups []string
	// Token, if set, is required on every request.
	Token  string
	Logger *slog.Logger
}

// Console is an http.Handler.
type Console struct {
	cfg  Config
	tpl  map[string]*template.Template
	csrf string
	mux  *http.ServeMux

	mu     sync.Mutex
	broker broker.Broker
	stream audit.Stream
}

// New returns a console.
func New(cfg Config) (*Console, error) {
	if cfg.DB == nil || cfg.Outbox == nil {
		return nil, errors.New("console: DB and Outbox are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OutboxTable == "" {
		cfg.OutboxTable = outbox.DefaultTable
	}
	if cfg.InboxTable == "" {
		cfg.InboxTable = sqlinbox.DefaultTable
	}
	if cfg.DeadLetterTable == "" {
		cfg.DeadLetterTable = sqldeadletter.DefaultTable
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, csrf: hex.EncodeToString(b[:]), tpl: map[string]*template.Template{}, mux: http.NewServeMux()}
	funcs := template.FuncMap{"ts": ts, "ago": ago, "q": url.QueryEscape, "ints": ints, "reasons": func() []string {
		return []string{deadletter.ReasonMaxAttempts, deadletter.ReasonPermanent, deadletter.ReasonUndecodable, deadletter.ReasonNoRoute}
	}}
	for _, page := range []string{"overview", "trace", "deadletters", "parked", "confirm", "error", "done"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+page+".html")
		if err != nil {
			return nil, err
		}
		c.tpl[page] = t
	}
	static, _ := fs.Sub(staticFS, "static")
	c.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	c.mux.HandleFunc("GET /{$}", c.overview)
	c.mux.HandleFunc("GET /trace", c.trace)
	c.mux.HandleFunc("GET /deadletters", c.deadLetters)
	c.mux.HandleFunc("GET /parked", c.parked)
	c.mux.HandleFunc("POST /confirm", c.confirm)
	c.mux.HandleFunc("POST /do", c.do)
	return c, nil
}

// Close closes the broker the console opened.
func (c *Console) Close(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broker != nil {
		err := c.broker.Close(ctx)
		c.broker = nil
		return err
	}
	return nil
}

// ServeHTTP implements http.Handler: authentication, security headers,
// and a page (not a stack trace) for a panic.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if c.cfg.Token != "" && !c.authorized(r) {
		h.Set("WWW-Authenticate", `Basic realm="eventkit console"`)
		http.Error(w, "eventkit console: a token is required (basic auth password, or Authorization: Bearer)", http.StatusUnauthorized)
		return
	}
	defer func() {
		if p := recover(); p != nil {
			c.cfg.Logger.Error("console: panic", "path", r.URL.Path, "panic", fmt.Sprint(p))
			c.fail(w, r, http.StatusInternalServerError, errors.New("internal error (logged by the console)"))
		}
	}()
	c.mux.ServeHTTP(w, r)
}

func (c *Console) authorized(r *http.Request) bool {
	tok := ""
	if _, p, ok := r.BasicAuth(); ok {
		tok = p
	} else if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
		tok = strings.TrimPrefix(a, "Bearer ")
	}
	return subtle.ConstantTimeCompare([]byte(tok), []byte(c.cfg.Token)) == 1
}

// who names the operator for the log.
func who(r *http.Request) string {
	if u, _, ok := r.BasicAuth(); ok && u != "" {
		return u + "@" + r.RemoteAddr
	}
	return r.RemoteAddr
}

// page is what every template gets.
type page struct {
	Title  string
	Nav    string
	CSRF   string
	Errors []string
	Data   any
}

func (c *Console) render(w http.ResponseWriter, status int, name string, p page) {
	p.CSRF = c.csrf
	var b strings.Builder
	if err := c.tpl[name].Execute(&b, p); err != nil {
		c.cfg.Logger.Error("console: render", "page", name, "err", err)
		http.Error(w, "eventkit console: the page could not be rendered (logged)", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

func (c *Console) fail(w http.ResponseWriter, _ *http.Request, status int, err error) {
	c.render(w, status, "error", page{Title: "Error", Errors: []string{oneLine(err)}})
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// getBroker opens the broker once (again after a failure).
func (c *Console) getBroker(ctx context.Context) (broker.Broker, audit.Stream, error) {
	if c.cfg.Broker == nil {
		return nil, nil, errors.New("no broker configured (--broker)")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broker != nil {
		return c.broker, c.stream, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b, err := c.cfg.Broker(ctx)
	if err != nil {
		return nil, nil, err
	}
	c.broker = b
	c.stream, _ = audit.ForBroker(b)
	return b, c.stream, nil
}

func (c *Console) deadLetterStore() (*sqldeadletter.Store, error) {
	return sqldeadletter.New(c.cfg.DB, c.cfg.Dialect, c.cfg.DeadLetterTable)
}

func (c *Console) auditConfig(s audit.Stream) audit.Config {
	return audit.Config{DB: c.cfg.DB, Dialect: c.cfg.Dialect, OutboxTable: c.cfg.OutboxTable, InboxTable: c.cfg.InboxTable,
		DeadLetterTable: c.cfg.DeadLetterTable, Stream: s}
}

func ints(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ", ")
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

// checkCSRF checks the form's token and, when the browser says, that the
// request comes from the console's own pages.
func (c *Console) checkCSRF(r *http.Request) error {
	if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(c.csrf)) != 1 {
		return errors.New("the form's CSRF token is missing or stale: reload the page and try again")
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return fmt.Errorf("cross-site request refused (Sec-Fetch-Site: %s)", site)
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		if u, err := url.Parse(o); err != nil || u.Host != r.Host {
			return fmt.Errorf("request from another origin (%s) refused", o)
		}
	}
	return nil
}

func (c *Console) inbox() (*sqlinbox.Inbox, error) {
	return sqlinbox.New(c.cfg.DB, c.cfg.Dialect, sqlinbox.Options{Table: c.cfg.InboxTable})
}
