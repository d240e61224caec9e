package examples_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/examples/shop"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/demo"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/outbox/sqliteoutbox"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "eventkit-examples-")
	if err != nil {
		panic(err)
	}
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	// The programs are thin wiring over packages that have their own race
	// tests; building them with -race as well doubles the build time, so it
	// is opt-in.
	if os.Getenv("EVENTKIT_EXAMPLES_RACE") != "" {
		args = append(args, "-race")
	}
	args = append(args, "./orders", "./inventory", "./notifications")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the examples: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
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

// proc is one running example program; its output goes to a log file that
// survives restarts.
type proc struct {
	name, logPath string
	args          []string
	cmd           *exec.Cmd
	exited        chan error
}

func start(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, logPath: filepath.Join(dir, name+".log"), args: args}
	p.restart(t)
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			t.Logf("---- %s log ----\n%s", name, b)
		}
	})
	return p
}

func (p *proc) restart(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p.cmd = exec.Command(filepath.Join(binDir, p.name), p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	p.exited = make(chan error, 1)
	go func(cmd *exec.Cmd, ch chan error) { ch <- cmd.Wait() }(p.cmd, p.exited)
}

// stop sends sig and waits for the program to exit.
func (p *proc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case err := <-p.exited:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not exit within 20s of %v", p.name, sig)
		return nil
	}
}

func (p *proc) log(t *testing.T) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func openSQLite(t *testing.T, path string) shop.DB {
	db, err := sql.Open("sqlite", sqliteoutbox.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return shop.DB{DB: db, Dialect: sqlinbox.SQLite}
}

type order struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	TraceID string `json:"trace_id"`
}

// TestServices runs the three programs against the real NATS with a SQLite
// file each, places orders over HTTP, kills the inventory program with
// SIGKILL in the middle, then the orders program right after its last 201,
// starts both again, and checks that every order
// ends confirmed or cancelled, reserved or rejected once and notified once,
// and that one trace id follows each order through the three services.
func TestServices(t *testing.T) {
	natsURL := testenv.NATS.URL(t)
	dir := t.TempDir()
	prefix := testenv.Name("examples") + "."
	common := []string{"--broker", natsURL, "--topic-prefix", prefix, "--ack-wait", "3s"}
	store := func(svc string) string { return filepath.Join(dir, svc+".db") }
	cleanupStreams(t, natsURL, prefix)

	addr := freeAddr(t)
	inv := start(t, dir, "inventory", append(common, "--store", store("inventory"), "--stock", "8")...)
	notes := start(t, dir, "notifications", append(common, "--store", store("notifications"))...)
	ord := start(t, dir, "orders", append(common, "--store", store("orders"), "--listen", addr)...)

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	base := "http://" + addr
	waitHealthy := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := client.Get(base + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("orders did not become healthy: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitHealthy()

	// Bad requests are refused and leave nothing behind.
	for _, body := range []string{`{`, `{"customer_id":"c","product_sku":"SKU-KETTLE","quantity":0}`, `{"customer_id":"c","product_sku":"NOPE","quantity":1}`} {
		resp, err := client.Post(base+"/orders", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %s: status %d, want 400", body, resp.StatusCode)
		}
	}

	const n = 20
	var orders []order
	place := func(i int) {
		p := shop.Catalogue[i%len(shop.Catalogue)]
		body, _ := json.Marshal(map[string]any{"customer_id": fmt.Sprintf("customer-%d", i%5), "product_sku": p.SKU, "quantity": 1 + i%3})
		resp, err := client.Post(base+"/orders", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var o order
		if err := json.NewDecoder(resp.Body).Decode(&o); err != nil || resp.StatusCode != http.StatusCreated || o.ID == "" || o.TraceID == "" {
			t.Fatalf("POST /orders: status %d, %+v, %v", resp.StatusCode, o, err)
		}
		orders = append(orders, o)
	}
	for i := range 8 {
		place(i)
	}
	// SIGKILL inventory with work in flight; orders keep coming meanwhile.
	if err := inv.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("inventory exited cleanly after SIGKILL?")
	}
	for i := 8; i < n; i++ {
		place(i)
	}
	// SIGKILL orders right after its last 201: the last events may still be
	// in its outbox, and inventory's answers arrive while it is down.
	if err := ord.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("orders exited cleanly after SIGKILL?")
	}
	time.Sleep(300 * time.Millisecond)
	inv.restart(t)
	ord.restart(t)
	waitHealthy()

	// Every order is decided, and every order has its notification.
	get := func(id string) order {
		resp, err := client.Get(base + "/orders/" + id)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var o order
		if err := json.NewDecoder(resp.Body).Decode(&o); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /orders/%s: status %d, %v", id, resp.StatusCode, err)
		}
		return o
	}
	notesDB := openSQLite(t, store("notifications"))
	deadline := time.Now().Add(60 * time.Second)
	for {
		pending := 0
		for _, o := range orders {
			if s := get(o.ID).Status; s != "confirmed" && s != "cancelled" {
				pending++
			}
		}
		var notified int
		err := notesDB.QueryRow(`SELECT COUNT(*) FROM demo_notifications`).Scan(&notified)
		if pending == 0 && err == nil && notified == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s: %d of %d orders pending, %d notified (%v)", pending, n, notified, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Graceful shutdown: SIGTERM, exit status 0.
	for _, p := range []*proc{ord, inv, notes} {
		if err := p.stop(t, syscall.SIGTERM); err != nil {
			t.Errorf("%s after SIGTERM: %v", p.name, err)
		}
	}

	// The end state, from the three databases.
	ordersDB, invDB := openSQLite(t, store("orders")), openSQLite(t, store("inventory"))
	v, err := demo.Check(context.Background(), ordersDB, invDB, notesDB)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || v.Orders != n || v.Notifications != n {
		t.Fatalf("verdict: %+v", v)
	}
	if v.Confirmed == 0 || v.Cancelled == 0 {
		t.Errorf("want both outcomes (stock 8 per product is too little for every order): %d confirmed, %d cancelled", v.Confirmed, v.Cancelled)
	}
	for _, q := range []struct {
		db    shop.DB
		query string
	}{
		{notesDB, `SELECT COUNT(*) FROM demo_notifications WHERE sent_count <> 1`},
		{ordersDB, `SELECT COUNT(*) FROM ` + shop.OutboxTable("orders")},
		{invDB, `SELECT COUNT(*) FROM ` + shop.OutboxTable("inventory")},
	} {
		var c int
		if err := q.db.QueryRow(q.query).Scan(&c); err != nil || c != 0 {
			t.Errorf("%s: %d, %v; want 0", q.query, c, err)
		}
	}

	// One trace per order, through all three services.
	invLog, notesLog, ordLog := inv.log(t), notes.log(t), ord.log(t)
	for _, o := range orders {
		for name, log := range map[string]string{"inventory": invLog, "notifications": notesLog, "orders": ordLog} {
			if !strings.Contains(log, "order_id="+o.ID) || !strings.Contains(log, "trace_id="+o.TraceID) {
				t.Errorf("%s's log does not show order %s with trace id %s", name, o.ID, o.TraceID)
			}
		}
	}
	t.Logf("%d orders: %d confirmed, %d cancelled; inventory and orders killed with SIGKILL and restarted", n, v.Confirmed, v.Cancelled)
}

// cleanupStreams deletes the test's streams from the shared NATS server when
// the test ends.
func cleanupStreams(t *testing.T, url, prefix string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := natsbroker.Connect(ctx, url, natsbroker.Options{})
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer b.Close(ctx)
		for _, topic := range []string{shop.DefaultTopics.Orders, shop.DefaultTopics.Inventory} {
			for _, suffix := range []string{"", ".dlq"} {
				err := b.JetStream().DeleteStream(ctx, b.StreamName(prefix+topic+suffix))
				if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
					t.Logf("cleanup: delete stream: %v", err)
				}
			}
		}
	})
}
