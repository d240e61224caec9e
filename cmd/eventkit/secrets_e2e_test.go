package main_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
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
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventkit/eventkit/internal/testenv"
)

// secret is planted in every URL of TestNoSecretPrinted; no output may
// contain it.
const secret = "Pl4ntedS3cr3t"

// hostOf returns the host:port of a test service's URL or DSN.
func hostOf(t *testing.T, raw string) string {
	t.Helper()
	if i := strings.Index(raw, "@tcp("); i >= 0 {
		rest := raw[i+5:]
		return rest[:strings.IndexByte(rest, ')')]
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// urlCase is a URL with the planted secret, for one scheme and one way of
// going wrong (or right).
type urlCase struct{ name, url string }

// secretURLs returns, for one scheme, URLs that carry the secret in each way
// a user may write one: user info, query parameter, a password that breaks
// URL parsing ("s3%c..."), one whose '/' moves it out of the user info, a
// closed port, and (where the server accepts it) a working one.
func secretURLs(scheme, host, user, path string, ok ...string) []urlCase {
	cs := []urlCase{
		{scheme + "-bad-password", scheme + "://" + user + ":" + secret + "@" + host + path},
		{scheme + "-bad-host", scheme + "://" + user + ":" + secret + "@127.0.0.1:1" + path},
		{scheme + "-unparseable", scheme + "://" + user + ":s3%c" + secret + "@" + host + path},
		{scheme + "-misparsed", scheme + "://" + user + ":1234/" + secret + "@" + host + path},
		{scheme + "-bad-port", scheme + "://" + user + ":" + secret + "@" + strings.Split(host, ":")[0] + ":port" + path},
		{scheme + "-query", scheme + "://127.0.0.1:1" + path + "?password=" + secret + "&token=" + secret},
	}
	for i, u := range ok {
		cs = append(cs, urlCase{fmt.Sprintf("%s-ok%d", scheme, i), u})
	}
	return cs
}

// TestNoSecretPrinted runs every command with a secret planted in its store
// and broker URLs, in every scheme and every way of failing (bad host, bad
// password, bad and unparseable URLs) or succeeding, and with the secret in
// the environment for --help: no stdout or stderr may contain it.
func TestNoSecretPrinted(t *testing.T) {
	t.Parallel()
	lockBench(t) // it runs bench too
	pgHost := hostOf(t, testenv.Postgres.URL(t))
	myHost := hostOf(t, testenv.MySQL.URL(t))
	natsHost := hostOf(t, testenv.NATS.URL(t))
	amqpHost := hostOf(t, testenv.RabbitMQ.URL(t))
	redisHost := hostOf(t, testenv.Redis.URL(t))
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	kafkaHost := kf.ListenAddrs()[0]
	dir := t.TempDir()
	sqliteURL := "sqlite://" + filepath.Join(dir, "secrets.db")

	// Tables of our own on the real Postgres, for the commands that work.
	prefix := testenv.Name("sec")
	tables := []string{"--outbox-table", prefix + "_outbox", "--inbox-table", prefix + "_inbox", "--dlq-table", prefix + "_dlq"}
	pool, err := pgxpool.New(context.Background(), testenv.Postgres.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = pool.Exec(ctx, fmt.Sprintf(`DROP TABLE IF EXISTS %[1]s_outbox, %[1]s_outbox_migrations, %[1]s_outbox_subject_seq, %[1]s_inbox, %[1]s_inbox_positions, %[1]s_dlq; DROP FUNCTION IF EXISTS %[1]s_outbox_notify()`, prefix))
		// `outbox cdc setup` made a slot and a publication named after the
		// table: drop them too, or every run leaks a replication slot.
		_, _ = pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE database = current_database() AND NOT active AND strpos(slot_name, $1) > 0`, prefix)
		rows, err := pool.Query(ctx, `SELECT pubname FROM pg_publication WHERE strpos(pubname, $1) > 0`, prefix)
		if err == nil {
			var pubs []string
			for rows.Next() {
				var n string
				if rows.Scan(&n) == nil {
					pubs = append(pubs, n)
				}
			}
			rows.Close()
			for _, n := range pubs {
				_, _ = pool.Exec(ctx, `DROP PUBLICATION IF EXISTS `+pgx.Identifier{n}.Sanitize())
			}
		}
		pool.Close()
	})

	stores := append(secretURLs("postgres", pgHost, "postgres", "/test",
		"postgres://postgres:"+secret+"@"+pgHost+"/test?sslmode=disable&application_name=sec&password="+secret), // trust: any password works
		secretURLs("mysql", myHost, "root", "/test",
			"mysql://root:"+secret+"@"+myHost+"/test?ssl-cert=/nonexistent&ssl-key=/nonexistent/"+secret)...)
	stores = append(stores, urlCase{"postgres-tls", "postgres://postgres:" + secret + "@" + pgHost +
		"/test?sslmode=verify-full&sslrootcert=/nonexistent&sslcert=/nonexistent&sslkey=/nonexistent/" + secret})
	brokers := []urlCase{}
	for _, s := range []struct {
		scheme, host, user, path string
		ok                       []string
	}{
		{"nats", natsHost, "u", "", []string{"nats://u:" + secret + "@" + natsHost, "nats://" + secret + "@" + natsHost,
			"tls://" + secret + "@" + natsHost + "?tlsca=/nonexistent", "nats://" + natsHost + "?nkey=/nonexistent/" + secret,
			"nats://" + natsHost + "?creds=/nonexistent/" + secret}},
		{"kafka", kafkaHost, "u", "", []string{"kafka://u:" + secret + "@" + kafkaHost,
			"kafka://u:" + secret + "@" + kafkaHost + "?sasl.mechanism=SCRAM-SHA-256",
			"kafka://" + kafkaHost + "?sasl.mechanism=PLAIN&sasl.username=u&sasl.password=" + secret,
			"kafka://" + kafkaHost + "?ssl.certificate.location=/nonexistent&ssl.key.location=/nonexistent/" + secret}},
		{"amqp", amqpHost, "guest", "/", []string{"amqp://guest:guest@" + amqpHost + "/?auth_token=" + secret,
			"amqps://guest:" + secret + "@" + amqpHost + "/?certfile=/nonexistent&keyfile=/nonexistent/" + secret}},
		{"redis", redisHost, "", "/0", []string{"redis://:" + secret + "@" + redisHost + "/0",
			"rediss://u:" + secret + "@" + redisHost + "/0?cacert=/nonexistent&key=/nonexistent/" + secret}},
	} {
		brokers = append(brokers, secretURLs(s.scheme, s.host, s.user, s.path, s.ok...)...)
	}

	type job struct {
		name string
		args []string
		env  []string
	}
	var jobs []job
	okNATS := "nats://" + natsHost
	for _, s := range stores {
		flags := append([]string{"--store", s.url}, tables...)
		for _, cmd := range [][]string{
			{"migrate", "up"}, {"migrate", "status"}, {"outbox", "status"}, {"outbox", "requeue", "--seq", "1"},
			{"dlq", "list"}, {"dlq", "show", "no-such-event"}, {"dlq", "purge", "--all", "--yes"},
			{"relay", "--listen", "127.0.0.1:0", "--broker", okNATS},
			{"bench", "relay", "--broker", okNATS, "--events", "10", "--rate", "10", "--duration", "200ms"},
			{"demo", "--orders", "3", "--no-faults", "--timeout", "5s"},
		} {
			if s.name == "postgres-ok0" && cmd[0] == "bench" || cmd[0] == "demo" && strings.HasSuffix(s.name, "ok0") {
				continue // they would work on tables that are not ours
			}
			jobs = append(jobs, job{name: s.name + "/" + strings.Join(cmd[:2], "-"), args: append(cmd, flags...)})
		}
		if strings.HasPrefix(s.name, "postgres") && !strings.HasSuffix(s.name, "ok0") {
			jobs = append(jobs, job{name: s.name + "/cdc-setup", args: append([]string{"outbox", "cdc", "setup"}, flags...)})
		}
	}
	for _, b := range brokers {
		flags := []string{"--broker", b.url}
		for _, cmd := range [][]string{
			{"relay", "--listen", "127.0.0.1:0", "--migrate", "--store", sqliteURL},
			{"bench", "publish", "--events", "5"},
			{"bench", "consume", "--events", "5", "--concurrency", "1"},
			{"bench", "relay", "--store", sqliteURL, "--events", "5", "--rate", "10", "--duration", "200ms"},
			{"dlq", "replay", "--all", "--store", sqliteURL, "--dlq-table", "sec_dlq"},
			{"demo", "--orders", "3", "--no-faults", "--timeout", "5s", "--dir", filepath.Join(dir, "demo-"+b.name)},
		} {
			jobs = append(jobs, job{name: b.name + "/" + strings.Join(cmd[:2], "-"), args: append(cmd, flags...)})
		}
	}
	// --help and usage errors with the secrets in the environment.
	env := []string{"EVENTKIT_STORE=postgres://postgres:" + secret + "@" + pgHost + "/test",
		"EVENTKIT_BROKER=amqp://guest:s3%c" + secret + "@" + amqpHost + "/"}
	for _, cmd := range [][]string{{}, {"demo"}, {"relay"}, {"migrate", "up"}, {"migrate", "status"}, {"outbox", "status"},
		{"outbox", "requeue"}, {"outbox", "cdc", "setup"}, {"dlq", "list"}, {"dlq", "replay"}, {"dlq", "purge"},
		{"bench", "publish"}, {"bench", "consume"}, {"bench", "relay"}} {
		jobs = append(jobs, job{name: "help/" + strings.Join(cmd, "-"), args: append(cmd, "--help"), env: env})
		jobs = append(jobs, job{name: "usage/" + strings.Join(cmd, "-"), args: append(cmd, "--bogus"), env: env})
	}
	jobs = append(jobs, job{name: "env/relay", args: []string{"relay", "--listen", "127.0.0.1:0"}, env: env})

	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			start := time.Now()
			out := runStopped(t, j.env, j.args...)
			if d := time.Since(start); d > 1500*time.Millisecond {
				t.Logf("%s took %v", j.name, d.Round(time.Millisecond))
			}
			if i := strings.Index(out, secret); i >= 0 {
				t.Errorf("%s: eventkit %s printed the secret:\n%s", j.name, strings.Join(j.args, " "), out)
			}
			if strings.Contains(out, "s3%c") {
				t.Errorf("%s: eventkit %s printed part of an unparseable password:\n%s", j.name, strings.Join(j.args, " "), out)
			}
		}()
	}
	wg.Wait()
}

// runStopped runs eventkit with args and returns its stdout and stderr. A
// command that keeps running (a relay that started) gets SIGTERM once it
// logged that it started, or after 20s.
func runStopped(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	started := make(chan struct{})
	out := &markBuffer{marker: "relay starting", hit: started}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
		return out.String()
	case <-started:
	case <-time.After(20 * time.Second):
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	return out.String()
}

// markBuffer collects output and closes hit once marker was written.
type markBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	hit    chan struct{}
	closed bool
}

func (b *markBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if !b.closed && strings.Contains(b.buf.String(), b.marker) {
		b.closed = true
		close(b.hit)
	}
	return len(p), nil
}

func (b *markBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
