package console_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/internal/console"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
)

// server is a console on a fresh database without tables and with a
// broker that cannot be reached.
func server(t *testing.T, token string) (*httptest.Server, *connect.Store) {
	t.Helper()
	st, err := connect.OpenStore(context.Background(), testdb.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	con, err := console.New(console.Config{DB: st.SQL, Dialect: st.Dialect, Outbox: st.Outbox, Pool: st.Pool, Token: token,
		Broker: func(context.Context) (broker.Broker, error) {
			return nil, errors.New("cannot connect to broker nats://127.0.0.1:1")
		}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(con)
	t.Cleanup(srv.Close)
	return srv, st
}

func get(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBadInputAndOutages: missing tables, an unreachable broker and
// malformed input give a message on the page, never a stack trace.
func TestBadInputAndOutages(t *testing.T) {
	srv, _ := server(t, "")
	for _, path := range []string{"/", "/trace?q=abc", "/trace?q=%00", "/deadletters?since=yesterday", "/parked"} {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		code, body := get(t, req)
		if code >= 500 || !strings.Contains(body, `class="error"`) || strings.Contains(body, "goroutine") {
			t.Errorf("%s: status %d, body without an error message:\n%s", path, code, body)
		}
	}
}

// TestCSRFAndConfirmation: a mutating POST without the page's token, or
// without the confirmation, does nothing.
func TestCSRFAndConfirmation(t *testing.T) {
	srv, _ := server(t, "")
	form := url.Values{"op": {"purge"}, "all": {"yes"}, "confirmed": {"yes"}}
	req, _ := http.NewRequest("POST", srv.URL+"/do", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if code, body := get(t, req); code != http.StatusForbidden || !strings.Contains(body, "CSRF") {
		t.Fatalf("POST without CSRF token: %d %s", code, body)
	}
	// The token from a page, but a cross-site request.
	req, _ = http.NewRequest("GET", srv.URL+"/parked", nil)
	_, page := get(t, req)
	i := strings.Index(page, `name="csrf" value="`)
	if i < 0 {
		t.Fatal("no CSRF token on the page")
	}
	tok := page[i+len(`name="csrf" value="`):]
	tok = tok[:strings.IndexByte(tok, '"')]
	form.Set("csrf", tok)
	req, _ = http.NewRequest("POST", srv.URL+"/do", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	if code, _ := get(t, req); code != http.StatusForbidden {
		t.Fatalf("cross-origin POST: %d", code)
	}
	form.Del("confirmed")
	req, _ = http.NewRequest("POST", srv.URL+"/do", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if code, body := get(t, req); code != http.StatusBadRequest || !strings.Contains(body, "not confirmed") {
		t.Fatalf("unconfirmed POST: %d %s", code, body)
	}
}

// TestToken: with a token every request needs it.
func TestToken(t *testing.T) {
	srv, _ := server(t, "s3cret")
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	if code, _ := get(t, req); code != http.StatusUnauthorized {
		t.Fatalf("without token: %d", code)
	}
	req, _ = http.NewRequest("GET", srv.URL+"/", nil)
	req.SetBasicAuth("ops", "wrong")
	if code, _ := get(t, req); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", code)
	}
	req, _ = http.NewRequest("GET", srv.URL+"/", nil)
	req.SetBasicAuth("ops", "s3cret")
	if code, _ := get(t, req); code != http.StatusOK {
		t.Fatalf("basic auth: %d", code)
	}
	req, _ = http.NewRequest("GET", srv.URL+"/static/style.css", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	if code, body := get(t, req); code != http.StatusOK || !strings.Contains(body, "body{") {
		t.Fatalf("bearer, static asset: %d", code)
	}
}
