// Package benchkit measures a user's own setup: publish and consume rates of
// a broker and the outbox relay's throughput and commit-to-broker latency.
// `eventkit bench` runs it. The comparisons with raw clients and Watermill
// are the go test benchmarks of each package and of the bench/ module.
package benchkit

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/outbox"
)

var quiet = slog.New(slog.DiscardHandler)

// Progress counts the events a measurement has completed so far, for a
// progress line; a nil *Progress counts nothing.
type Progress struct {
	done atomic.Int64
}

// Done returns the events completed so far.
func (p *Progress) Done() int64 {
	if p == nil {
		return 0
	}
	return p.done.Load()
}

// Add counts n more events done.
func (p *Progress) Add(n int) { p.add(n) }

func (p *Progress) add(n int) {
	if p != nil {
		p.done.Add(int64(n))
	}
}

func (p *Progress) set(n int64) {
	if p != nil {
		p.done.Store(n)
	}
}

// Result is one measurement. When a measurement is interrupted (its context
// ends), the functions return the Result of what was completed by then,
// with Interrupted set, together with the context's error.
type Result struct {
	Name     string        `json:"name"`
	Events   int           `json:"events"`
	Duration time.Duration `json:"duration_ns"`
	Rate     float64       `json:"events_per_second"`
	P50      time.Duration `json:"p50_ns,omitempty"`
	P99      time.Duration `json:"p99_ns,omitempty"`
	Max      time.Duration `json:"max_ns,omitempty"`
	// Interrupted is set when the measurement ended early: Events is
	// then what was completed.
	Interrupted bool `json:"interrupted,omitempty"`
	// CPU is the CPU time used during the measurement (see Measure).
	CPU CPUUsed `json:"-"`
	// Latencies are the measured latencies (per Publish call, per
	// event), for a histogram or a plot; nil where none are measured.
	Latencies []time.Duration `json:"-"`
	// Timeline is the progress sampled while it ran (see Measure).
	Timeline []Point `json:"-"`
}

// ClientCPUPerEvent is the client process's CPU µs per event.
func (r Result) ClientCPUPerEvent() float64 { return perEvent(r.CPU.Client, r.Events) }

// ServerCPUPerEvent is the local servers' CPU µs per event; ok is false
// when no server was metered (they are remote).
func (r Result) ServerCPUPerEvent() (us float64, ok bool) {
	return perEvent(r.CPU.Server, r.Events), r.CPU.HasServer
}

// Point is the progress of a measurement at one moment.
type Point struct {
	At   time.Duration // since the start
	Done int64
}

// Measure runs fn, sampling m's CPU before and after (the Result's CPU)
// and p every interval (its Timeline; interval 0 samples nothing).
func Measure(m *Meter, p *Progress, interval time.Duration, fn func() (Result, error)) (Result, error) {
	var tl []Point
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	if interval > 0 && p != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			tl = append(tl, Point{})
			for {
				select {
				case <-stop:
					tl = append(tl, Point{At: time.Since(start), Done: p.Done()})
					return
				case <-t.C:
					tl = append(tl, Point{At: time.Since(start), Done: p.Done()})
				}
			}
		}()
	}
	c0 := m.Sample()
	res, err := fn()
	res.CPU = m.Sample().Since(c0)
	close(stop)
	wg.Wait()
	res.Timeline = tl
	return res, err
}

// Partial ends an interrupted measurement with done events completed
// since start; lat are the latencies measured so far.
func (r *Result) Partial(done int, start time.Time, lat []time.Duration) { r.partial(done, start, lat) }

// Finish completes a measurement whose Events and Duration are set: its
// rate and latency percentiles.
func (r *Result) Finish(lat []time.Duration) { r.finish(lat) }

// partial ends an interrupted measurement with what was done by then.
func (r *Result) partial(done int, start time.Time, lat []time.Duration) {
	r.Events = done
	r.Interrupted = true
	if !start.IsZero() {
		r.Duration = time.Since(start)
	}
	r.finish(lat)
}

func (r *Result) finish(lat []time.Duration) {
	if r.Duration > 0 {
		r.Rate = float64(r.Events) / r.Duration.Seconds()
	}
	if len(lat) > 0 {
		r.Latencies = lat
		slices.Sort(lat)
		r.P50 = lat[len(lat)/2]
		r.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
		r.Max = lat[len(lat)-1]
	}
}

// Payload returns size bytes of the letters a to z, repeated: the payload
// of the benchmarks' events.
func Payload(size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

// Events makes n events of size payload bytes over 100 subjects.
func Events(n, size int) []eventkit.Event {
	payload := Payload(size)
	evs := make([]eventkit.Event, n)
	for i := range evs {
		evs[i] = eventkit.New("bench.event", "application/octet-stream", payload,
			eventkit.WithSubject(fmt.Sprintf("subject-%d", i%100)), eventkit.WithSource("/eventkit/bench"))
	}
	return evs
}

// Publish publishes evs to topic in batches of batch, with confirms, and
// measures events/s and the latency of each batch.
func Publish(ctx context.Context, b broker.Publisher, topic string, evs []eventkit.Event, batch int, p *Progress) (Result, error) {
	res := Result{Name: "publish", Events: len(evs)}
	lat := make([]time.Duration, 0, len(evs)/batch+1)
	start := time.Now()
	for i := 0; i < len(evs); i += batch {
		t := time.Now()
		if err := b.Publish(ctx, topic, evs[i:min(i+batch, len(evs))]...); err != nil {
			if ctx.Err() != nil {
				res.partial(i, start, lat)
			}
			return res, err
		}
		lat = append(lat, time.Since(t))
		p.add(min(batch, len(evs)-i))
	}
	res.Duration = time.Since(start)
	res.finish(lat)
	return res, nil
}

// Consume consumes n events already on topic with the consumer runtime
// (acks after each handler call) and measures events/s.
func Consume(ctx context.Context, sub broker.Subscriber, topic, group string, n, concurrency int, p *Progress) (Result, error) {
	res := Result{Name: fmt.Sprintf("consume (concurrency %d)", concurrency), Events: n}
	var got atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	c, err := consumer.New(sub, consumer.Config{Concurrency: concurrency, MaxInFlight: max(256, 4*concurrency)})
	if err != nil {
		return res, err
	}
	var start time.Time
	var startOnce sync.Once
	if err := c.HandleFunc(topic, group, func(context.Context, eventkit.Event) error {
		startOnce.Do(func() { start = time.Now() })
		p.add(1)
		if got.Add(1) >= int64(n) {
			once.Do(func() { close(done) })
		}
		return nil
	}); err != nil {
		return res, err
	}
	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(rctx) }()
	select {
	case <-done:
	case <-ctx.Done():
	case err := <-errc:
		cancel()
		return res, err
	}
	res.Duration = time.Since(start)
	cancel()
	<-errc
	if got.Load() < int64(n) {
		res.partial(int(got.Load()), start, nil)
		return res, fmt.Errorf("consumed %d of %d events: %w", got.Load(), n, ctx.Err())
	}
	res.finish(nil)
	return res, nil
}

// Writer adds events to an outbox in a database/sql transaction.
type Writer func(ctx context.Context, tx *sql.Tx, topic string, events ...eventkit.Event) error

// RelayDrain fills the outbox with evs (committed in transactions of 1,000),
// then runs a relay until they are all published, and measures events/s.
func RelayDrain(ctx context.Context, db *sql.DB, add Writer, store outbox.Store, pub broker.Publisher, topic string, evs []eventkit.Event, batch int, p *Progress) (Result, error) {
	res := Result{Name: "relay drain", Events: len(evs)}
	for i := 0; i < len(evs); i += 1000 {
		if err := inTx(ctx, db, func(tx *sql.Tx) error { return add(ctx, tx, topic, evs[i:min(i+1000, len(evs))]...) }); err != nil {
			return res, fmt.Errorf("fill the outbox: %w", err)
		}
	}
	counter := &countingPublisher{Publisher: pub}
	r := outbox.NewRelay(store, counter, outbox.RelayConfig{BatchSize: batch, StatusInterval: -1, Logger: quiet})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- r.Run(rctx) }()
	for r.Stats().Delivered < int64(len(evs)) {
		select {
		case err := <-errc:
			return res, fmt.Errorf("relay stopped: %w", err)
		case <-ctx.Done():
			res.partial(int(r.Stats().Delivered), start, nil)
			return res, ctx.Err()
		case <-time.After(2 * time.Millisecond):
			p.set(r.Stats().Delivered)
		}
	}
	res.Duration = time.Since(start)
	cancel()
	<-errc
	res.finish(nil)
	return res, nil
}

// RelayLatency commits one event at a time at rate events/s for d with a
// relay running, and measures the time from each transaction's start to the
// broker's confirm of the event's publish (commit-to-ack, plus the insert).
func RelayLatency(ctx context.Context, db *sql.DB, add Writer, store outbox.Store, pub broker.Publisher, topic string, rate int, d time.Duration, size int, p *Progress) (Result, error) {
	n := int(float64(rate) * d.Seconds())
	res := Result{Name: fmt.Sprintf("relay latency at %d events/s", rate), Events: n}
	evs := Events(n, size)
	committed := make(map[string]time.Time, n)
	var mu sync.Mutex
	lat := make([]time.Duration, 0, n)
	counter := &countingPublisher{Publisher: pub, onConfirm: func(ids []string) {
		now := time.Now()
		mu.Lock()
		for _, id := range ids {
			if t, ok := committed[id]; ok {
				lat = append(lat, now.Sub(t))
				delete(committed, id)
				p.add(1)
			}
		}
		mu.Unlock()
	}}
	r := outbox.NewRelay(store, counter, outbox.RelayConfig{StatusInterval: -1, Logger: quiet})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Run(rctx) }()
	time.Sleep(200 * time.Millisecond) // let it take the lead
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i, e := range evs {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		if ctx.Err() != nil {
			cancel()
			<-errc
			mu.Lock()
			defer mu.Unlock()
			res.partial(len(lat), start, lat)
			return res, ctx.Err()
		}
		// The clock starts before the transaction (a little pessimistic:
		// it includes the insert), so a confirm can never come first.
		mu.Lock()
		committed[e.ID] = time.Now()
		mu.Unlock()
		err := inTx(ctx, db, func(tx *sql.Tx) error { return add(ctx, tx, topic, e) })
		if err != nil {
			if ctx.Err() != nil {
				cancel()
				<-errc
				mu.Lock()
				defer mu.Unlock()
				res.partial(len(lat), start, lat)
			}
			return res, err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for r.Stats().Delivered < int64(n) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	res.Duration = time.Since(start)
	cancel()
	<-errc
	mu.Lock()
	defer mu.Unlock()
	if len(lat) < n {
		return res, fmt.Errorf("only %d of %d events were confirmed", len(lat), n)
	}
	res.finish(lat)
	return res, nil
}

func inTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// countingPublisher reports the ids of every confirmed Publish call.
type countingPublisher struct {
	broker.Publisher
	onConfirm func(ids []string)
}

func (c *countingPublisher) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	err := c.Publisher.Publish(ctx, topic, events...)
	if err == nil && c.onConfirm != nil {
		ids := make([]string, len(events))
		for i, e := range events {
			ids[i] = e.ID
		}
		c.onConfirm(ids)
	}
	return err
}
