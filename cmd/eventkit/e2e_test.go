package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "eventkit-e2e-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "eventkit")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building eventkit: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runCmd(t, stdin, nil, args...)
}

// runEnv runs eventkit with extra environment variables.
func runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runCmd(t, "", env, args...)
}

func runCmd(t *testing.T, stdin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("eventkit %v: %v", args, err)
	}
	return r
}

func (r result) mustOK(t *testing.T, args ...string) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("eventkit %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// TestDemo runs the README's main command with the embedded default and
// checks the verdict and that the counts add up.
func TestDemo(t *testing.T) {
	t.Parallel()
	r := run(t, "", "demo", "--orders", "500", "--json").mustOK(t)
	var s struct {
		Orders       int    `json:"orders_placed"`
		Published    int    `json:"events_published"`
		Handled      int    `json:"events_handled"`
		Duplicates   int    `json:"duplicates_skipped"`
		DeadLettered int    `json:"dead_lettered"`
		LostAcks     int    `json:"acks_lost_on_purpose"`
		Relay        int    `json:"relay_restarts"`
		Consumer     int    `json:"consumer_restarts"`
		PoisonID     string `json:"poison_event_id"`
		PoisonInDLQ  bool   `json:"poison_in_dead_letters"`
		Verdict      struct {
			Orders, Confirmed, Cancelled, Pending, Notifications int
			OK                                                   bool
			Problems                                             []string
		} `json:"verdict"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, r.stdout)
	}
	v := s.Verdict
	switch {
	case !v.OK:
		t.Fatalf("verdict failed: %v", v.Problems)
	case s.Orders != 500 || v.Orders != 500:
		t.Fatalf("orders placed %d, in the database %d; want 500", s.Orders, v.Orders)
	case v.Confirmed+v.Cancelled != 500 || v.Pending != 0 || v.Notifications != 500:
		t.Fatalf("confirmed %d + cancelled %d, pending %d, notifications %d", v.Confirmed, v.Cancelled, v.Pending, v.Notifications)
	case v.Confirmed == 0 || v.Cancelled == 0:
		t.Fatalf("want both confirmed and cancelled orders, got %d and %d", v.Confirmed, v.Cancelled)
	// order.created + one inventory answer per order + order.cancelled per cancellation
	case s.Published < 2*500+v.Cancelled:
		t.Fatalf("published %d events, want at least %d", s.Published, 2*500+v.Cancelled)
	// Every lost ack brings the event again: the inbox skips it, or, for
	// the poison event, it is dead-lettered again (the dead-letter table
	// keeps one row).
	case s.LostAcks == 0 || s.Duplicates+s.DeadLettered-1 < s.LostAcks:
		t.Fatalf("%d acks lost on purpose but %d duplicates skipped (%d dead-lettered)", s.LostAcks, s.Duplicates, s.DeadLettered)
	case !s.PoisonInDLQ || s.PoisonID == "" || s.DeadLettered < 1:
		t.Fatalf("poison event %q in dead letters: %v (dead-lettered %d)", s.PoisonID, s.PoisonInDLQ, s.DeadLettered)
	case s.Relay != 1 || s.Consumer != 1:
		t.Fatalf("faults: relay restarts %d, consumer restarts %d", s.Relay, s.Consumer)
	}
	t.Logf("summary: %s", strings.Join(strings.Fields(r.stdout), " "))
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"demo", "--orders", "many"}, 2, "invalid argument"},
		{[]string{"demo", "--orders", "0"}, 2, "--orders must be between"},
		{[]string{"relay", "--store", "bogus://x", "--broker", "nats://127.0.0.1:4222"}, 1, "bad URL"},
		{[]string{"relay", "--store", "sqlite:///tmp/x.db", "--broker", "nats://127.0.0.1:4222", "--mode", "fast"}, 2, "--mode must be polling or cdc"},
		{[]string{"outbox", "status", "--store", "postgres://postgres@127.0.0.1:1/test"}, 1, "cannot connect to postgres://postgres@127.0.0.1:1/test"},
		{[]string{"migrate", "up"}, 1, "--store is required"},
		{[]string{"dlq", "replay", "--store", "sqlite:///tmp/x.db"}, 2, "say what to replay"},
		{[]string{"nosuchcommand"}, 2, "unknown command"},
	}
	for _, c := range cases {
		r := run(t, "", c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("eventkit %v: exit %d, stderr %q; want exit %d and %q", c.args, r.code, r.stderr, c.code, c.want)
		}
		if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
			t.Errorf("eventkit %v printed a stack trace: %s", c.args, r.stderr)
		}
		if lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1; lines > 2 {
			t.Errorf("eventkit %v: %d lines of error, want one (plus a usage hint): %s", c.args, lines, r.stderr)
		}
	}
	for _, cmd := range [][]string{{"demo"}, {"relay"}, {"migrate", "up"}, {"outbox", "status"}, {"dlq", "list"}, {"dlq", "replay"}, {"dlq", "purge"}} {
		r := run(t, "", append(cmd, "--help")...).mustOK(t)
		if !strings.Contains(r.stdout, "Examples:") {
			t.Errorf("eventkit %v --help has no example:\n%s", cmd, r.stdout)
		}
	}
}

// pgFixture is an outbox on a fresh table of the real Postgres, with the
// URL flags that point eventkit at it.
type pgFixture struct {
	pool  *pgxpool.Pool
	store *pgoutbox.Store
	flags []string
	nats  string
}

func newPG(t *testing.T) *pgFixture {
	t.Helper()
	return newPGOn(t, testenv.Postgres.URL(t), testenv.Name("e2e"))
}

// newPGOn is newPG on the database of url, with tables named prefix_outbox
// and so on, or the default tables if prefix is "" (then left for the
// database's owner to drop).
func newPGOn(t *testing.T, url, prefix string) *pgFixture {
	t.Helper()
	natsURL := testenv.NATS.URL(t)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	f := &pgFixture{pool: pool, nats: natsURL, flags: []string{"--store", url}}
	table := outbox.DefaultTable
	if prefix != "" {
		table = prefix + "_outbox"
		f.flags = append(f.flags, "--outbox-table", table, "--inbox-table", prefix+"_inbox", "--dlq-table", prefix+"_dlq")
	}
	run(t, "", append([]string{"migrate", "up"}, f.flags...)...).mustOK(t)
	if prefix != "" {
		t.Cleanup(func() {
			_, _ = pool.Exec(context.Background(), fmt.Sprintf(`DROP TABLE IF EXISTS %[1]s_outbox, %[1]s_outbox_migrations, %[1]s_outbox_subject_seq, %[1]s_inbox, %[1]s_inbox_positions, %[1]s_dlq; DROP FUNCTION IF EXISTS %[1]s_outbox_notify()`, prefix))
		})
	}
	f.store, err = pgoutbox.New(pool, pgoutbox.Config{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *pgFixture) add(t *testing.T, topic string, n int) []eventkit.Event {
	t.Helper()
	ctx := context.Background()
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("order.created", "application/json", fmt.Appendf(nil, `{"n":%d}`, i), eventkit.WithSubject(fmt.Sprintf("o-%d", i%17)))
	}
	for i := 0; i < n; i += 500 {
		err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error { return f.store.Add(ctx, tx, topic, evs[i:min(i+500, n)]...) })
		if err != nil {
			t.Fatal(err)
		}
	}
	return evs
}

func TestMigrateAndOutboxStatus(t *testing.T) {
	t.Parallel()
	f := newPG(t)
	r := run(t, "", append([]string{"migrate", "status"}, f.flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, "create_outbox") || strings.Contains(r.stdout, " no\n") {
		t.Fatalf("migrate status after up:\n%s", r.stdout)
	}
	run(t, "", append([]string{"migrate", "up"}, f.flags...)...).mustOK(t) // idempotent
	f.add(t, testenv.Name("topic"), 7)
	r = run(t, "", append([]string{"outbox", "status"}, f.flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, "backlog:    7 events") || !strings.Contains(r.stdout, "order.created  7") {
		t.Fatalf("outbox status:\n%s", r.stdout)
	}
	r = run(t, "", append([]string{"outbox", "status", "--json"}, f.flags...)...).mustOK(t)
	var st struct{ Backlog int }
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Backlog != 7 {
		t.Fatalf("outbox status --json: %v\n%s", err, r.stdout)
	}
}

// collect subscribes to topic on NATS and records event ids.
func collect(t *testing.T, url, topic string) (ids func() map[string]int) {
	t.Helper()
	ctx := context.Background()
	b, err := natsbroker.Connect(ctx, url, natsbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	sub, err := b.Subscribe(ctx, topic, "e2e", broker.AutoAck(func(_ context.Context, e eventkit.Event, _ int) error {
		id := e.ID
		if orig := e.Extension(deadletter.ExtReplayOf); orig != "" {
			id = "replay:" + orig // a replay has an id of its own
		}
		mu.Lock()
		seen[id]++
		mu.Unlock()
		return nil
	}), broker.WithMaxInFlight(1000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sub.Close(context.Background())
		_ = b.DeleteTopic(context.Background(), topic)
		_ = b.Close(context.Background())
	})
	return func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string]int, len(seen))
		for k, v := range seen {
			out[k] = v
		}
		return out
	}
}

// TestRelayKilled runs the relay daemon against the real Postgres and NATS,
// SIGKILLs it mid-stream, restarts it, and checks that every event arrived.
func TestRelayKilled(t *testing.T) {
	t.Parallel()
	f := newPG(t)
	topic := testenv.Name("relay")
	ids := collect(t, f.nats, topic)
	const n = 5000
	evs := f.add(t, topic, n)
	args := append([]string{"relay", "--broker", f.nats, "--listen", "127.0.0.1:0", "--batch", "200", "--log-format", "json"}, f.flags...)

	start := func() *exec.Cmd {
		cmd := exec.Command(bin, args...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	cmd := start()
	testenv.WaitFor(t, 60*time.Second, "the first events", func() bool { return len(ids()) > 0 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	before := len(ids())
	t.Logf("relay killed after %d of %d events arrived", before, n)
	cmd = start()
	testenv.WaitFor(t, 90*time.Second, "every event", func() bool { return len(ids()) == n })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("relay after SIGTERM: %v", err)
	}
	got := ids()
	dups := 0
	for _, e := range evs {
		if got[e.ID] == 0 {
			t.Fatalf("event %s lost", e.ID)
		}
		dups += got[e.ID] - 1
	}
	t.Logf("all %d events delivered; %d duplicates", n, dups)
	r := run(t, "", append([]string{"outbox", "status"}, f.flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, "backlog:    0 events") {
		t.Fatalf("outbox not drained:\n%s", r.stdout)
	}
}

// TestDLQ stores a dead letter as the consumer runtime makes it, then lists,
// shows, replays (to the real NATS) and purges it with the command.
func TestDLQ(t *testing.T) {
	t.Parallel()
	f := newPG(t)
	topic := testenv.Name("dlq")
	ids := collect(t, f.nats, topic)
	orig := eventkit.New("payment.failed", "application/json", []byte(`{"order_id":"o-9","amount_cents":1999}`),
		eventkit.WithSubject("o-9"), eventkit.WithExtension("correlationid", "c-9"))
	dl := orig.Clone()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for k, v := range map[string]string{deadletter.ExtTopic: topic, deadletter.ExtGroup: "billing", deadletter.ExtAttempts: "5",
		deadletter.ExtFirstFailure: now, deadletter.ExtLastFailure: now, deadletter.ExtReason: deadletter.ReasonMaxAttempts,
		deadletter.ExtError: "card declined"} {
		dl.Extensions[k] = v
	}
	env, _ := dl.MarshalJSON()
	table := f.flags[len(f.flags)-1]
	if _, err := f.pool.Exec(context.Background(), `INSERT INTO `+table+` (topic, grp, event_id, event_type, reason, error, attempts, dead_at, envelope)
		VALUES ($1, 'billing', $2, $3, 'max-attempts', 'card declined', 5, $4, $5)`, topic, dl.ID, dl.Type, time.Now().UnixNano(), env); err != nil {
		t.Fatal(err)
	}
	r := run(t, "", append([]string{"dlq", "list", "--topic", topic}, f.flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, dl.ID) || !strings.Contains(r.stdout, "card declined") || !strings.Contains(r.stdout, "1 dead letters") {
		t.Fatalf("dlq list:\n%s", r.stdout)
	}
	r = run(t, "", append([]string{"dlq", "show", dl.ID}, f.flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, `"dlqerror": "card declined"`) || !strings.Contains(r.stdout, `amount_cents`) {
		t.Fatalf("dlq show:\n%s", r.stdout)
	}
	r = run(t, "", append([]string{"dlq", "replay", "--broker", f.nats, dl.ID}, f.flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, "replayed 1 dead letters") {
		t.Fatalf("dlq replay:\n%s", r.stdout)
	}
	// The row is in the format from before dead letters had ids of their own
	// (dead letter id = original id): it replays all the same, as a replay
	// of orig addressed to billing.
	testenv.WaitFor(t, 30*time.Second, "the replayed event", func() bool { return ids()["replay:"+orig.ID] == 1 })
	r = run(t, "", append([]string{"dlq", "list", "--json"}, f.flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, `"replays": 1`) {
		t.Fatalf("dlq list after replay:\n%s", r.stdout)
	}
	// A filtered replay skips what was replayed already.
	r = run(t, "", append([]string{"dlq", "replay", "--broker", f.nats, "--topic", topic}, f.flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, "replayed 0 dead letters") {
		t.Fatalf("second filtered replay:\n%s", r.stdout)
	}
	// Purge asks first; "no" keeps everything.
	r = run(t, "no\n", append([]string{"dlq", "purge", "--all"}, f.flags...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "not confirmed") {
		t.Fatalf("purge without confirmation: exit %d, %s", r.code, r.stderr)
	}
	r = run(t, "yes\n", append([]string{"dlq", "purge", "--all"}, f.flags...)...).mustOK(t)
	if !strings.Contains(r.stdout, "purged 1 dead letters") {
		t.Fatalf("purge: %s", r.stdout)
	}
}

// TestBench runs each bench subcommand briefly against the real NATS and
// Postgres and checks that it reports sane figures.
// TestBenchNeverTouchesUserData exports every EVENTKIT_* variable the way
// a user does for `eventkit relay`, pointing at an outbox that holds
// committed, unpublished events, then runs every bench and read-only
// command. The user's rows must come out byte for byte as they went in, and
// the bench must leave no table, stream or group of its own behind.
// benchMu serialises the tests that run bench against the shared NATS
// server: two of them check that no bench stream is left behind, which a
// bench of another test still running would otherwise trip.
var benchMu sync.Mutex

func lockBench(t *testing.T) {
	benchMu.Lock()
	t.Cleanup(benchMu.Unlock)
}

func TestBenchNeverTouchesUserData(t *testing.T) {
	t.Parallel()
	lockBench(t)
	f := newPG(t)
	ctx := context.Background()
	f.add(t, testenv.Name("orders"), 50)
	table := f.flags[3] // --outbox-table value
	fingerprint := func() string {
		var fp string
		var n int
		err := f.pool.QueryRow(ctx, `SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY seq)), '') FROM `+table+` t`).Scan(&n, &fp)
		if err != nil {
			t.Fatal(err)
		}
		if n != 50 {
			t.Fatalf("%s holds %d rows, want the user's 50", table, n)
		}
		return fp
	}
	before := fingerprint()
	js := natsStreams(t, f.nats)
	env := []string{
		"EVENTKIT_STORE=" + f.flags[1], "EVENTKIT_BROKER=" + f.nats,
		"EVENTKIT_OUTBOX_TABLE=" + table, "EVENTKIT_INBOX_TABLE=" + f.flags[5], "EVENTKIT_DLQ_TABLE=" + f.flags[7],
	}
	for _, args := range [][]string{
		{"bench", "publish", "--events", "2000", "--json"},
		{"bench", "consume", "--events", "2000", "--concurrency", "1,8", "--json"},
		{"bench", "relay", "--events", "2000", "--rate", "200", "--duration", "1s", "--json"},
		{"outbox", "status"}, {"outbox", "status", "--json"}, {"migrate", "status"}, {"dlq", "list"},
	} {
		r := runEnv(t, env, args...).mustOK(t, args...)
		if args[0] != "bench" {
			continue
		}
		var res []struct {
			Name   string  `json:"name"`
			Events int     `json:"events"`
			Rate   float64 `json:"events_per_second"`
			P99    float64 `json:"p99_seconds"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res) == 0 {
			t.Fatalf("eventkit %v: %v\n%s", args, err, r.stdout)
		}
		for _, x := range res {
			if x.Events <= 0 || x.Rate <= 0 {
				t.Fatalf("eventkit %v: %+v", args, x)
			}
			t.Logf("%s: %d events, %.0f events/s, p99 %.2fms", x.Name, x.Events, x.Rate, x.P99*1e3)
		}
	}
	if after := fingerprint(); after != before {
		t.Fatalf("the user's outbox %s changed under bench and read-only commands", table)
	}
	var left []string
	rows, err := f.pool.Query(ctx, `SELECT relname FROM pg_class WHERE relname LIKE 'eventkit\_bench\_%'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		left = append(left, n)
	}
	rows.Close()
	if len(left) > 0 {
		t.Errorf("bench left tables behind: %v", left)
	}
	for name := range natsStreams(t, f.nats) {
		if !js[name] && strings.Contains(strings.ToLower(name), "bench") {
			t.Errorf("bench left stream %s behind", name)
		}
	}
}

// TestBenchInterrupted sends SIGINT to a running bench: it must print what
// it measured so far, clean up, and exit non-zero.
func TestBenchInterrupted(t *testing.T) {
	t.Parallel()
	lockBench(t)
	natsURL := testenv.NATS.URL(t)
	before := natsStreams(t, natsURL)
	cmd := exec.Command(bin, "bench", "publish", "--broker", natsURL, "--events", "300000", "--batch", "1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // let it publish for a while
	_ = cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if err == nil {
		t.Fatalf("an interrupted bench exited 0\n%s", out.String())
	}
	if !strings.Contains(out.String(), "publish (interrupted)") || !strings.Contains(errb.String(), "interrupted") {
		t.Fatalf("interrupted bench printed\nstdout: %s\nstderr: %s", out.String(), errb.String())
	}
	for name := range natsStreams(t, natsURL) {
		if !before[name] && strings.Contains(strings.ToLower(name), "bench") {
			t.Errorf("interrupted bench left stream %s behind", name)
		}
	}
}

// natsTopic connects to NATS at url; when the test ends it deletes topic
// and closes the connection.
func natsTopic(t *testing.T, url, topic string) *natsbroker.Broker {
	t.Helper()
	b, err := natsbroker.Connect(context.Background(), url, natsbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.DeleteTopic(context.Background(), topic)
		_ = b.Close(context.Background())
	})
	return b
}

// natsStreams lists the JetStream streams on the server.
func natsStreams(t *testing.T, url string) map[string]bool {
	t.Helper()
	b, err := natsbroker.Connect(context.Background(), url, natsbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	names := map[string]bool{}
	l := b.JetStream().StreamNames(context.Background())
	for n := range l.Name() {
		names[n] = true
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestRelayCDC runs the relay daemon in CDC mode against the real Postgres
// and NATS: cdc setup, events committed, the relay SIGKILLed mid-stream and
// restarted, every event delivered, the slot's lag shown by outbox status,
// then cdc drop.
func TestRelayCDC(t *testing.T) {
	t.Parallel()
	f := newPG(t)
	slot := strings.ReplaceAll(testenv.Name("ek_e2e"), "-", "_")
	slotFlags := append([]string{"--slot", slot}, f.flags...)
	run(t, "", append([]string{"outbox", "cdc", "setup"}, slotFlags...)...).mustOK(t)
	t.Cleanup(func() { run(t, "", append([]string{"outbox", "cdc", "drop"}, slotFlags...)...) })
	r := run(t, "", append([]string{"outbox", "status"}, slotFlags...)...).mustOK(t)
	if !strings.Contains(r.stdout, "cdc slot:   "+slot) {
		t.Fatalf("outbox status does not show the slot:\n%s", r.stdout)
	}
	topic := testenv.Name("cdc")
	ids := collect(t, f.nats, topic)
	const n = 3000
	evs := f.add(t, topic, n)
	args := append([]string{"relay", "--mode", "cdc", "--broker", f.nats, "--listen", "", "--batch", "200"}, slotFlags...)
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	cmd := start()
	testenv.WaitFor(t, 60*time.Second, "the first events", func() bool { return len(ids()) > 0 })
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	t.Logf("CDC relay killed after %d of %d events arrived", len(ids()), n)
	cmd = start()
	testenv.WaitFor(t, 90*time.Second, "every event", func() bool { return len(ids()) == n })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("CDC relay after SIGTERM: %v", err)
	}
	got := ids()
	for _, e := range evs {
		if got[e.ID] == 0 {
			t.Fatalf("event %s lost", e.ID)
		}
	}
	r = run(t, "", append([]string{"outbox", "status", "--json"}, slotFlags...)...).mustOK(t)
	if !strings.Contains(r.stdout, `"slot_exists": true`) {
		t.Fatalf("outbox status --json:\n%s", r.stdout)
	}
	run(t, "", append([]string{"outbox", "cdc", "drop"}, slotFlags...)...).mustOK(t)
	r = run(t, "", append([]string{"outbox", "status"}, slotFlags...)...).mustOK(t)
	if strings.Contains(r.stdout, "cdc slot:") {
		t.Fatalf("slot still there after drop:\n%s", r.stdout)
	}
}
