package console_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/console"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
	"github.com/eventkit/eventkit/outbox"
)

// chromium returns the browser's path, or skips (fails in CI) saying how
// to install it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("EVENTKIT_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	msg := "chromium is not installed: apt-get install -y chromium (or set EVENTKIT_CHROMIUM)"
	testenv.Unavailable(t, msg)
	return ""
}

// world is a database with an outbox, an inbox and a dead-letter table, a
// NATS topic, a consumer group "billing" and the console on top.
type world struct {
	t      *testing.T
	ctx    context.Context
	st     *connect.Store
	b      *natsbroker.Broker
	dls    *sqldeadletter.Store
	topic  string
	healed atomic.Bool
	url    string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	pgURL := testdb.Postgres(t)
	natsURL := testenv.NATS.URL(t)
	st, err := connect.OpenStore(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Outbox.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	in, err := sqlinbox.New(st.SQL, st.Dialect, sqlinbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	dls, err := sqldeadletter.New(st.SQL, st.Dialect, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := dls.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := natsbroker.Connect(ctx, natsURL, natsbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, ctx: ctx, st: st, b: b, dls: dls, topic: testenv.Name("console")}
	t.Cleanup(func() {
		_ = b.DeleteTopic(context.Background(), w.topic)
		_ = b.DeleteTopic(context.Background(), w.topic+".dlq")
		_ = b.Close(context.Background())
	})
	subs, err := deadletter.Collect(ctx, b, dls, "", w.topic+".dlq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range subs {
			_ = s.Close(context.Background())
		}
	})
	c, err := consumer.New(b, consumer.Config{Inbox: in, Retry: consumer.RetryPolicy{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.HandleFunc(w.topic, "billing", func(ctx context.Context, ev eventkit.Event) error {
		if ev.Type == "order.poison" && !w.healed.Load() {
			return eventkit.Permanent(errors.New("no price for SKU-X"))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	t.Cleanup(func() { stop(); <-done })

	con, err := console.New(console.Config{DB: st.SQL, Dialect: st.Dialect, Outbox: st.Outbox, Pool: st.Pool, Topics: []string{w.topic},
		Broker: func(ctx context.Context) (broker.Broker, error) {
			return natsbroker.Connect(ctx, natsURL, natsbroker.Options{})
		}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(con)
	t.Cleanup(func() { srv.Close(); _ = con.Close(context.Background()) })
	w.url = srv.URL
	return w
}

// write adds events to the outbox and, unless park, publishes them as the
// relay does; with park the relay parks them with a reason.
func (w *world) write(park bool, events ...eventkit.Event) {
	w.t.Helper()
	tx, err := w.st.SQL.BeginTx(w.ctx, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.st.AddSQL(w.ctx, tx, w.topic, events...); err != nil {
		w.t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		w.t.Fatal(err)
	}
	recs, err := w.st.Outbox.Claim(w.ctx, outbox.ClaimParams{Limit: 100})
	if err != nil {
		w.t.Fatal(err)
	}
	for _, r := range recs {
		if park {
			if err := w.st.Outbox.Fail(w.ctx, outbox.FailParams{Seq: r.Seq, Reason: "broker rejected it: payload too large", Park: true}); err != nil {
				w.t.Fatal(err)
			}
			continue
		}
		if err := w.b.Publish(w.ctx, w.topic, r.Event); err != nil {
			w.t.Fatal(err)
		}
		if _, err := w.st.Outbox.Complete(w.ctx, []int64{r.Seq}, false); err != nil {
			w.t.Fatal(err)
		}
	}
}

// waitFor polls cond until it holds or a minute passes.
func (w *world) waitFor(what string, cond func() bool) {
	w.t.Helper()
	for end := time.Now().Add(time.Minute); !cond(); {
		if time.Now().After(end) {
			w.t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *world) applied(id string) bool {
	var n int
	_ = w.st.SQL.QueryRowContext(w.ctx, `SELECT count(*) FROM processed_events WHERE consumer = 'billing' AND event_id = $1`, id).Scan(&n)
	return n > 0
}

// TestBrowser drives the console in headless Chromium against PostgreSQL
// and NATS: it finds an event by id and follows its path, sees a parked
// row and a dead letter, replays the dead letter and sees it applied.
func TestBrowser(t *testing.T) {
	exe := chromium(t)
	w := newWorld(t)
	ok := eventkit.New("order.created", "application/json", []byte(`{"order":"o-1","total":{"amount":4200,"currency":"EUR"}}`), eventkit.WithSubject("o-1"))
	poison := eventkit.New("order.poison", "application/json", []byte(`{"order":"o-2","sku":"SKU-X"}`), eventkit.WithSubject("o-2"))
	w.write(false, ok, poison)
	big := eventkit.New("order.created", "application/octet-stream", []byte{0xde, 0xad, 0xbe, 0xef}, eventkit.WithSubject("o-3"))
	w.write(true, big)
	w.waitFor("the first event applied", func() bool { return w.applied(ok.ID) })
	w.waitFor("the dead letter stored", func() bool { n, _ := w.dls.Count(w.ctx, sqldeadletter.Filter{}); return n == 1 })

	shots := t.TempDir()
	if os.Getenv("EVENTKIT_CONSOLE_SCREENSHOTS") != "" {
		shots = filepath.Join("..", "..", "docs", "img")
	}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()

	type step = chromedp.Action[chromedp.Void]
	shot := func(name string) step {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name), buf, 0o644)
		})
	}
	text := func(sel string) string {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
			t.Fatalf("%s: %v", sel, err)
		}
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("%s: %v", sel, err)
		}
		return s
	}
	run := func(what string, actions ...step) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// Overview: the parked row and the dead letter are counted.
	run("overview", chromedp.Navigate(w.url+"/"), chromedp.WaitVisible(chromedp.CSS("#parked-count")))
	if s := text("#parked-count"); strings.TrimSpace(s) != "1" {
		t.Fatalf("parked count %q, want 1", s)
	}
	if s := text("#dlcounts"); !strings.Contains(s, "billing") {
		t.Fatalf("dead letters per group: %q", s)
	}
	run("overview shot", shot("console-overview.png"))

	// Tracer: find the applied event by id and follow its path.
	run("trace", chromedp.Navigate(w.url+"/trace"), chromedp.WaitVisible(chromedp.CSS("#q")),
		chromedp.SendKeys(chromedp.CSS("#q"), ok.ID), chromedp.Click(chromedp.CSS("#trace-go")),
		chromedp.WaitVisible(chromedp.CSS("#applied")))
	if s := text("#applied"); !strings.Contains(s, "billing") {
		t.Fatalf("applied by: %q", s)
	}
	if s := text("#at-broker"); !strings.Contains(s, w.topic+" message") {
		t.Fatalf("at broker: %q", s)
	}
	if s := text("pre.payload"); !strings.Contains(s, `"currency": "EUR"`) {
		t.Fatalf("payload not pretty-printed JSON: %q", s)
	}
	run("trace shot", shot("console-trace.png"))

	// The dead-lettered event: not applied, dead-lettered by billing.
	run("trace poison", chromedp.Navigate(w.url+"/trace?q="+poison.ID), chromedp.WaitVisible(chromedp.CSS("#dead")))
	if s := text("#dead"); !strings.Contains(s, "permanent") {
		t.Fatalf("dead letters: %q", s)
	}
	if s := text("#applied"); !strings.Contains(s, "no group") {
		t.Fatalf("applied: %q", s)
	}

	// Parked rows page, and the parked event traced.
	run("parked", chromedp.Navigate(w.url+"/parked"), chromedp.WaitVisible(chromedp.CSS("#parked")))
	if s := text("#parked"); !strings.Contains(s, "payload too large") {
		t.Fatalf("parked: %q", s)
	}
	run("parked shot", shot("console-parked.png"))

	// Replay the dead letter, confirming, after the bug is fixed.
	w.healed.Store(true)
	run("dead letters", chromedp.Navigate(w.url+"/deadletters"), chromedp.WaitVisible(chromedp.CSS("#deadletters")), shot("console-deadletters.png"),
		chromedp.Click(chromedp.CSS("button.replay-one")), chromedp.WaitVisible(chromedp.CSS("#what")))
	if s := text("#what"); !strings.Contains(s, "Republish 1 dead letters") {
		t.Fatalf("confirmation: %q", s)
	}
	run("confirm shot", shot("console-confirm.png"))
	if w.applied(poison.ID) {
		t.Fatal("the dead letter was replayed before the confirmation")
	}
	run("confirm", chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#result")))
	if s := text("#result"); !strings.Contains(s, "replayed 1 dead letters") {
		t.Fatalf("result: %q", s)
	}
	w.waitFor("the replayed event applied", func() bool { return w.applied(poison.ID) })
	run("trace replayed", chromedp.Navigate(w.url+"/trace?q="+poison.ID), chromedp.WaitVisible(chromedp.CSS("#applied")))
	if s := text("#applied"); !strings.Contains(s, "billing") {
		t.Fatalf("after the replay, applied by: %q", s)
	}
	if s := text("#at-broker"); !strings.Contains(s, "replay for billing") {
		t.Fatalf("after the replay, at broker: %q", s)
	}
	run("trace replayed shot", shot("console-trace-replayed.png"))

	// Bad input: a message on the page.
	run("unknown", chromedp.Navigate(w.url+"/trace?q=no-such-event"), chromedp.WaitVisible(chromedp.CSS("p.error")))
	if s := text("p.error"); !strings.Contains(s, "no event with id or subject") {
		t.Fatalf("unknown id: %q", s)
	}
	run("malformed", chromedp.Navigate(w.url+"/trace?q=%01x"), chromedp.WaitVisible(chromedp.CSS("p.error")))
	if s := text("p.error"); !strings.Contains(s, "malformed") {
		t.Fatalf("malformed id: %q", s)
	}
	fmt.Fprintln(os.Stderr, "screenshots in", shots)
}
