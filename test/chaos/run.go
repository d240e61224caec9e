package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/kafkabroker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
)

type config struct {
	brokers                       string
	events, subjects              int
	minFaults, drain, faultsAfter time.Duration
	pg, natsURL, rabbitURL        string
	redisURL                      string
	portBase                      int
	eventkitBin                   string
	noFaults, keep, verbose       bool
}

type result struct {
	broker                                string
	produced, applied, lost, twice, order int64
	deadLettered                          int64
	kills, cuts, stalls, exits            int64
	converged                             bool
	faulted                               bool // faults were to be injected (not -no-faults)
	duration                              time.Duration
	logs                                  string
}

func (r result) ok() bool {
	return r.converged && r.lost == 0 && r.twice == 0 && r.order == 0 && r.produced > 0 && !r.noFault()
}

// noFault: faults were to be injected but no process was killed or no
// connection cut (the run proved nothing about them).
func (r result) noFault() bool { return r.faulted && (r.kills == 0 || r.cuts == 0) }

func (r result) String() string {
	s := fmt.Sprintf("chaos broker=%s produced=%d applied=%d lost=%d applied_twice=%d order_violations=%d dead_lettered=%d kills=%d cuts=%d stalls=%d duration=%s",
		r.broker, r.produced, r.applied, r.lost, r.twice, r.order, r.deadLettered, r.kills, r.cuts, r.stalls, r.duration.Round(100*time.Millisecond))
	if !r.ok() {
		s += " FAILED"
		if !r.converged {
			s += " (not converged: events still unapplied at the end of -drain)"
		}
		if r.noFault() {
			s += " (no kill or no cut: make -duration longer)"
		}
		if r.logs != "" {
			s += " logs=" + r.logs
		}
	}
	return s
}

func (c config) logf(format string, args ...any) {
	if c.verbose {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
	}
}

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// eventkitBinary builds cmd/eventkit once per process.
func eventkitBinary(cfg config) (string, error) {
	if cfg.eventkitBin != "" {
		return cfg.eventkitBin, nil
	}
	buildOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/eventkit/eventkit").Output()
		if err != nil {
			buildOnce.err = fmt.Errorf("find the module root (run from inside the module): %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "chaos-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "eventkit")
		cmd := exec.Command("go", "build", "-o", buildOnce.path, "./cmd/eventkit")
		cmd.Dir = strings.TrimSpace(string(out))
		if b, err := cmd.CombinedOutput(); err != nil {
			buildOnce.err = fmt.Errorf("go build ./cmd/eventkit: %v\n%s", err, b)
		}
	})
	return buildOnce.path, buildOnce.err
}

func newID() string {
	b := make([]byte, 4)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

func hostOf(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("bad URL %q", raw)
	}
	return u.Host, nil
}

func withHost(raw, host string) string {
	u, _ := url.Parse(raw)
	u.Host = host
	return u.String()
}

// proc is one supervised child process: restarted whenever it exits until
// stopped.
type proc struct {
	name     string
	args     []string
	killable bool
	log      *os.File

	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	exits   atomic.Int64 // exits not caused by our kill
	killed  atomic.Bool
	done    chan struct{}
	exitErr error // last exit of a non-restarted process
}

func (p *proc) start(cfg config, restart bool) {
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		for {
			p.mu.Lock()
			if p.stopped {
				p.mu.Unlock()
				return
			}
			cmd := exec.Command(p.args[0], p.args[1:]...)
			cmd.Stdout, cmd.Stderr = p.log, p.log
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			err := cmd.Start()
			if err == nil {
				p.cmd = cmd
			}
			p.mu.Unlock()
			if err == nil {
				err = cmd.Wait()
			}
			fmt.Fprintf(p.log, "=== %s exited: %v\n", p.name, err)
			if !p.killed.Swap(false) {
				p.mu.Lock()
				stopped := p.stopped
				p.mu.Unlock()
				if !stopped {
					p.exits.Add(1)
					cfg.logf("%s exited by itself: %v", p.name, err)
				}
			}
			if !restart {
				p.exitErr = err
				return
			}
			time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
		}
	}()
}

// kill SIGKILLs the running process (the supervisor restarts it).
func (p *proc) kill() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.ProcessState != nil || p.stopped {
		return false
	}
	p.killed.Store(true)
	return p.cmd.Process.Kill() == nil
}

// stop kills the process for good and waits for its supervisor.
func (p *proc) stop() {
	p.mu.Lock()
	p.stopped = true
	if p.cmd != nil && p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
	}
	p.mu.Unlock()
	<-p.done
}

func run(ctx context.Context, cfg config, kind string) (res result, err error) {
	res.broker, res.faulted = kind, !cfg.noFaults
	start := time.Now()
	n := names{newID()}
	ekBin, err := eventkitBinary(cfg)
	if err != nil {
		return res, err
	}
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	work, err := os.MkdirTemp("", "chaos-"+n.id+"-")
	if err != nil {
		return res, err
	}
	defer func() {
		if res.ok() && !cfg.keep {
			_ = os.RemoveAll(work)
		} else {
			res.logs = work
		}
	}()
	cfg.logf("run %s on %s, logs in %s", n.id, kind, work)

	pgHost, err := hostOf(cfg.pg)
	if err != nil {
		return res, err
	}
	var brokerURL, brokerHost string
	switch kind {
	case "nats":
		brokerURL = cfg.natsURL
	case "rabbitmq":
		brokerURL = cfg.rabbitURL
	case "redis":
		brokerURL = cfg.redisURL
	case "kafka":
		brokerURL = "kafka://127.0.0.1:" + strconv.Itoa(cfg.portBase+10)
	default:
		return res, fmt.Errorf("unknown broker %q (want nats, rabbitmq, redis, kafka or all)", kind)
	}
	if brokerHost, err = hostOf(brokerURL); err != nil {
		return res, err
	}

	var procs []*proc
	newProc := func(name string, killable bool, args ...string) (*proc, error) {
		f, err := os.Create(filepath.Join(work, name+".log"))
		if err != nil {
			return nil, err
		}
		p := &proc{name: name, args: args, killable: killable, log: f}
		procs = append(procs, p)
		return p, nil
	}
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			if procs[i].done != nil {
				procs[i].stop()
			}
			_ = procs[i].log.Close()
		}
	}()

	// Kafka: kfake in its own process, advertising the proxy.
	pgProxyAddr := "127.0.0.1:" + strconv.Itoa(cfg.portBase)
	brokerProxyAddr := "127.0.0.1:" + strconv.Itoa(cfg.portBase+1)
	if kind == "kafka" {
		kp, err := newProc("kfake", false, self, "-role", "kfake", "-listen", brokerHost, "-advertise", brokerProxyAddr)
		if err != nil {
			return res, err
		}
		kp.start(cfg, false)
	}
	pgProxy, err := newProxy("postgres", pgProxyAddr, pgHost)
	if err != nil {
		return res, fmt.Errorf("listen for the postgres proxy (-port-base): %w", err)
	}
	defer pgProxy.Close()
	brokerProxy, err := newProxy(kind, brokerProxyAddr, brokerHost)
	if err != nil {
		return res, fmt.Errorf("listen for the broker proxy (-port-base): %w", err)
	}
	defer brokerProxy.Close()
	pgThrough := withHost(cfg.pg, pgProxyAddr)
	brokerThrough := withHost(brokerURL, brokerProxyAddr)
	if kind == "kafka" {
		brokerThrough = brokerProxyAddr // the adapter takes host:port seeds
	}

	// Tables, topics and groups, directly (not through the proxy).
	pool, err := pgxpool.New(ctx, cfg.pg)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	defer func() {
		if !cfg.keep {
			for _, p := range procs {
				if p.done != nil {
					p.stop()
				}
			}
			cleanupDB(context.Background(), pool, n)
		}
	}()
	if err := setupDB(ctx, cfg, pool, n); err != nil {
		return res, err
	}
	admin, err := openBroker(ctx, kind, map[bool]string{true: brokerHost, false: brokerURL}[kind == "kafka"], slog.New(slog.DiscardHandler))
	if err != nil {
		return res, fmt.Errorf("broker: %w", err)
	}
	defer func() { _ = admin.Close(context.Background()) }()
	defer func() {
		if !cfg.keep {
			cleanupBroker(context.Background(), admin, n)
		}
	}()
	prov, ok := admin.(broker.Provisioner)
	if !ok {
		return res, fmt.Errorf("%T is not a broker.Provisioner", admin)
	}
	for i := range 2 {
		if err := prov.Provision(ctx, n.topic(i), n.group()); err != nil {
			return res, fmt.Errorf("provision %s: %w", n.topic(i), err)
		}
	}

	common := []string{"-id", n.id, "-pg", pgThrough, "-broker", kind, "-broker-url", brokerThrough,
		"-events", strconv.Itoa(cfg.events), "-subjects", strconv.Itoa(cfg.subjects)}
	relayArgs := func(i int, extra ...string) []string {
		storeURL := pgThrough
		return append([]string{ekBin, "relay", "--store", storeURL, "--broker", map[bool]string{true: "kafka://" + brokerProxyAddr, false: brokerThrough}[kind == "kafka"],
			"--outbox-table", n.outbox(i), "--listen", "", "--poll-interval", "200ms", "--log-level", "warn"}, extra...)
	}
	var killables []*proc
	for i := range 2 {
		p, err := newProc(fmt.Sprintf("relay-polling-%d", i+1), true, relayArgs(0)...)
		if err != nil {
			return res, err
		}
		killables = append(killables, p)
	}
	cdc, err := newProc("relay-cdc", true, relayArgs(1, "--mode", "cdc", "--slot", n.slot())...)
	if err != nil {
		return res, err
	}
	killables = append(killables, cdc)
	for i := range 3 {
		p, err := newProc(fmt.Sprintf("consumer-%d", i+1), true, append([]string{self, "-role", "consumer"}, common...)...)
		if err != nil {
			return res, err
		}
		killables = append(killables, p)
	}
	// The slot and publication are made here, before any relay starts and
	// any event is written: a CDC relay killed while it creates its slot
	// leaves none (a slot that is being created is listed in
	// pg_replication_slots but dropped if its creator dies), and events
	// committed before the slot exists are never streamed (pgcdc warns;
	// the polling relay must drain them). Found by this run: 90 events of
	// outbox 1 were never applied, and in strict order their subjects
	// waited behind them.
	cdcSetup, err := pgcdc.New(pool, admin, pgcdc.Config{Table: n.outbox(1), Slot: n.slot()})
	if err != nil {
		return res, err
	}
	if err := cdcSetup.Setup(ctx); err != nil {
		return res, fmt.Errorf("cdc setup (needs wal_level=logical): %w", err)
	}
	for _, p := range killables {
		p.start(cfg, true)
	}
	producer, err := newProc("producer", false, append([]string{self, "-role", "producer"}, common...)...)
	if err != nil {
		return res, err
	}
	producer.start(cfg, false)
	cfg.logf("producing %d events over %d subjects", cfg.events, cfg.subjects)

	// Faults until the producer is done and -duration has passed.
	faultsStart := time.Now()
	var kills atomic.Int64
	fctx, stopFaults := context.WithCancel(ctx)
	var fwg sync.WaitGroup
	if !cfg.noFaults {
		fwg.Add(2)
		go func() { // SIGKILL a relay or a consumer every 1-3 s
			defer fwg.Done()
			for sleep(fctx, time.Duration(1000+rand.IntN(2000))*time.Millisecond) {
				p := killables[rand.IntN(len(killables))]
				if p.kill() {
					kills.Add(1)
					cfg.logf("killed %s", p.name)
				}
			}
		}()
		go func() { // cut or stall connections every 0.3-1.5 s
			defer fwg.Done()
			for sleep(fctx, time.Duration(300+rand.IntN(1200))*time.Millisecond) {
				px := pgProxy
				if rand.IntN(2) == 0 {
					px = brokerProxy
				}
				switch r := rand.IntN(10); {
				case r < 5:
					cfg.logf("cut one %s connection: %d", px.name, px.Cut(false))
				case r < 7:
					cfg.logf("cut all %s connections: %d", px.name, px.Cut(true))
				default:
					d := time.Duration(200+rand.IntN(2300)) * time.Millisecond
					cfg.logf("stall %s for %s", px.name, d)
					px.Stall(d)
				}
			}
		}()
	}
	select {
	case <-producer.done:
	case <-ctx.Done():
	}
	if producer.exitErr != nil {
		stopFaults()
		fwg.Wait()
		return res, fmt.Errorf("producer failed: %v (see %s)", producer.exitErr, filepath.Join(work, "producer.log"))
	}
	cfg.logf("producer done after %s", time.Since(faultsStart).Round(time.Millisecond))
	// The faults go on while the events flow: until 90% of them are
	// applied (at most -faults-after after the producer is done), and at
	// least -duration.
	_ = waitFor(ctx, cfg.faultsAfter, func() (bool, error) {
		var applied int64
		err := pool.QueryRow(ctx, "SELECT count(DISTINCT (subject, seq)) FROM "+n.applied()).Scan(&applied)
		return err == nil && applied >= int64(cfg.events)*9/10, err
	})
	if rest := cfg.minFaults - time.Since(faultsStart); rest > 0 {
		sleep(ctx, rest)
	}
	stopFaults()
	fwg.Wait()
	cfg.logf("faults stopped; waiting for every event to be applied")

	count := func(ctx context.Context) error {
		return pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM `+n.orders()+`),
			(SELECT count(*) FROM (SELECT DISTINCT subject, seq FROM `+n.applied()+`) a),
			(SELECT count(*) FROM `+n.orders()+` o WHERE NOT EXISTS (SELECT 1 FROM `+n.applied()+` a WHERE a.subject = o.subject AND a.seq = o.seq)),
			(SELECT count(*) FROM `+n.applied()+`) - (SELECT count(*) FROM (SELECT DISTINCT subject, seq FROM `+n.applied()+`) a),
			(SELECT count(*) FROM `+n.violations()+`),
			(SELECT count(*) FROM `+n.inbox()+`_positions WHERE parked_seq IS NOT NULL)`).
			Scan(&res.produced, &res.applied, &res.lost, &res.twice, &res.order, &res.deadLettered)
	}
	last, lastChange := int64(-1), time.Now()
	err = waitFor(ctx, cfg.drain, func() (bool, error) {
		if err := count(ctx); err != nil {
			return false, err
		}
		if res.applied != last {
			last, lastChange = res.applied, time.Now()
			cfg.logf("applied %d of %d", res.applied, res.produced)
		}
		return res.lost == 0, nil
	})
	res.converged = err == nil
	if !res.converged {
		cfg.logf("not converged; no progress since %s", time.Since(lastChange).Round(time.Second))
	}
	// Every process stops before the final count, so that nothing is
	// applied after it.
	for _, p := range procs {
		p.stop()
	}
	if err := count(context.Background()); err != nil {
		return res, err
	}
	res.kills = kills.Load()
	res.cuts = pgProxy.cuts.Load() + brokerProxy.cuts.Load()
	res.stalls = pgProxy.stalls.Load() + brokerProxy.stalls.Load()
	for _, p := range procs {
		res.exits += p.exits.Load()
	}
	res.duration = time.Since(start)
	return res, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func waitFor(ctx context.Context, d time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			lastErr = err
		}
		if !sleep(ctx, 250*time.Millisecond) {
			if lastErr != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
			}
			return ctx.Err()
		}
	}
}

func setupDB(ctx context.Context, cfg config, pool *pgxpool.Pool, n names) error {
	stmts := []string{
		"CREATE TABLE " + n.orders() + " (subject text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (subject, seq))",
		"CREATE TABLE " + n.applied() + " (subject text NOT NULL, seq bigint NOT NULL, pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())",
		"CREATE TABLE " + n.state() + " (subject text PRIMARY KEY, last bigint NOT NULL DEFAULT 0)",
		"CREATE TABLE " + n.violations() + " (subject text NOT NULL, seq bigint NOT NULL, last bigint NOT NULL, pid int NOT NULL)",
		"INSERT INTO " + n.state() + " (subject) SELECT format('s%s', lpad(i::text, 3, '0')) FROM generate_series(0, " + strconv.Itoa(cfg.subjects-1) + ") i",
	}
	for _, s := range stmts {
		if _, err := pool.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	for i := range 2 {
		st, err := connect.OpenStore(ctx, cfg.pg, connect.WithOutboxTable(n.outbox(i)))
		if err != nil {
			return err
		}
		err = st.Outbox.Migrate(ctx)
		if err == nil && i == 0 {
			var in *sqlinbox.Inbox
			if in, err = sqlinbox.New(st.SQL, sqlinbox.Postgres, sqlinbox.Options{Table: n.inbox()}); err == nil {
				err = in.Migrate(ctx)
			}
		}
		st.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// cleanupDB drops the run's slot, publication and tables.
func cleanupDB(ctx context.Context, pool *pgxpool.Pool, n names) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = waitFor(ctx, 20*time.Second, func() (bool, error) {
		_, err := pool.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", n.slot())
		if err != nil {
			// still active: the killed relay's walsender is on its way out
			_, _ = pool.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active", n.slot())
		}
		return err == nil, err
	})
	_, _ = pool.Exec(ctx, "DROP PUBLICATION IF EXISTS "+n.slot())
	rows, err := pool.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE $1", n.prefix()+`\_%`)
	if err != nil {
		return
	}
	var tables []string
	for rows.Next() {
		var t string
		if rows.Scan(&t) == nil {
			tables = append(tables, t)
		}
	}
	rows.Close()
	for _, t := range tables {
		_, _ = pool.Exec(ctx, "DROP TABLE IF EXISTS "+t+" CASCADE")
	}
}

// cleanupBroker deletes the run's topics, dead-letter topics and groups.
func cleanupBroker(ctx context.Context, b broker.Broker, n names) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i := range 2 {
		for _, t := range []string{n.topic(i), n.topic(i) + ".dlq"} {
			switch b := b.(type) {
			case *natsbroker.Broker:
				_ = b.DeleteTopic(ctx, t)
			case *redisbroker.Broker:
				_ = b.DeleteTopic(ctx, t)
			case *rabbitmqbroker.Broker:
				_ = b.DeleteTopology(ctx, t, n.group(), deadletter.DefaultGroup)
			case *kafkabroker.Broker:
				_ = b.DeleteTopic(ctx, t, n.group(), deadletter.DefaultGroup)
			}
		}
	}
}
