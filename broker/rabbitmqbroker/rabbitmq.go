package rabbitmqbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
	"github.com/eventkit/eventkit/internal/backoff"
	"github.com/eventkit/eventkit/internal/redact"
)

var (
	// ErrUnroutable is wrapped by the error of an event that the server
	// returned (basic.return, reply 312 NO_ROUTE) because no queue is bound
	// to the topic's exchange: nobody has subscribed or provisioned a group
	// yet. The event was not stored anywhere. Use Provision to create the
	// groups before publishing.
	ErrUnroutable = errors.New("rabbitmq: event unroutable (no queue bound to the topic's exchange)")
	// ErrNacked is wrapped when the server nacked a publish (publisher
	// confirms): it did not take responsibility for the message.
	ErrNacked = errors.New("rabbitmq: publish nacked by the server")
	// ErrConnectionLost is wrapped when a publish was not confirmed because
	// the channel or connection closed first, or when a delivery cannot be
	// settled because the channel it came on is gone (it will be
	// redelivered). An unconfirmed event may or may not have been stored.
	ErrConnectionLost = errors.New("rabbitmq: connection or channel lost")
	// ErrQueueDeleted is the Err of a subscription that stopped because its
	// group's queue was deleted (the server cancelled the consumer). The
	// subscription does not re-create the queue: the events in it are gone.
	ErrQueueDeleted = errors.New("rabbitmq: the group's queue was deleted")
	// ErrBlocked is wrapped when Publish gave up (its ctx ended) while the
	// server was blocking publishers because of a memory or disk alarm.
	ErrBlocked = errors.New("rabbitmq: server blocks publishers (resource alarm)")
	// ErrNotConnected is wrapped when no connection could be obtained
	// within Options.ConnectTimeout (or the call's context).
	ErrNotConnected = errors.New("rabbitmq: not connected")
)

// Queue types.
const (
	QueueQuorum  = "quorum"
	QueueClassic = "classic"
)

// Defaults of Options.
const (
	DefaultURL            = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultMaxMessageSize = 4 << 20
	DefaultPublishWindow  = 512
	DefaultConnectTimeout = 10 * time.Second
	DefaultReconnectMin   = 100 * time.Millisecond
	DefaultReconnectMax   = 5 * time.Second
	DefaultConnectionName = "eventkit"
)

// DefaultDelayBuckets are the delays of the retry queues that emulate
// Nack(delay): a delay is rounded up to the next bucket (and capped at the
// largest).
var DefaultDelayBuckets = []time.Duration{
	250 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second,
	30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute,
	30 * time.Minute, time.Hour,
}

// Options configure a Broker. The zero value works against a local server
// with guest/guest.
type Options struct {
	// URL of the server, amqp://user:pass@host:port/vhost. Default DefaultURL.
	URL string
	// TLS, if set, is the TLS configuration of amqps:// connections (CA,
	// client certificate, server name), in place of the one the URL's
	// cacertfile, certfile and keyfile parameters make.
	TLS *tls.Config
	// ConnectionName is advertised to the server (client property
	// connection_name, visible in rabbitmqctl list_connections and the
	// management UI). Default "eventkit".
	ConnectionName string
	// QueueType of group queues and retry queues: QueueQuorum or
	// QueueClassic. Quorum queues are replicated and count redeliveries
	// exactly (x-delivery-count); classic queues only know "redelivered".
	// Default: quorum when the server supports it (RabbitMQ 3.8+), else
	// classic. Retry queues are quorum queues (with at-least-once
	// dead-lettering) from RabbitMQ 3.10 on, classic before.
	QueueType string
	// MaxMessageSize is the largest event (payload plus attributes) Publish
	// accepts. Default 4 MiB. It must not exceed the server's
	// max_message_size (128 MiB by default since RabbitMQ 3.8); a message
	// over the server's limit closes the publishing channel and fails.
	MaxMessageSize int
	// PublishWindow bounds the publishes of one Publish call awaiting their
	// confirm at once. Default 512.
	PublishWindow int
	// DelayBuckets are the retry-queue delays for Nack(delay), ascending.
	// Default DefaultDelayBuckets. Changing them creates new retry queues;
	// old ones stay until deleted (DeleteTopology deletes those it knows).
	DelayBuckets []time.Duration
	// ConnectTimeout bounds how long Publish, Subscribe and Provision wait
	// for a connection (while reconnecting) before failing with
	// ErrNotConnected, unless their context ends first. Default 10s.
	ConnectTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnection attempts. Defaults 100ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	// Logger receives reconnection and subscription events. Default
	// slog.Default(); slog.New(slog.DiscardHandler) silences it.
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	if o.ConnectionName == "" {
		o.ConnectionName = DefaultConnectionName
	}
	switch o.QueueType {
	case "", QueueQuorum, QueueClassic:
	default:
		return fmt.Errorf("rabbitmq: unknown QueueType %q (want %q or %q)", o.QueueType, QueueQuorum, QueueClassic)
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.PublishWindow <= 0 {
		o.PublishWindow = DefaultPublishWindow
	}
	if len(o.DelayBuckets) == 0 {
		o.DelayBuckets = DefaultDelayBuckets
	}
	for i, d := range o.DelayBuckets {
		if d < time.Millisecond || (i > 0 && d <= o.DelayBuckets[i-1]) {
			return fmt.Errorf("rabbitmq: DelayBuckets must be ascending and at least 1ms, got %v", o.DelayBuckets)
		}
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = DefaultReconnectMin
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = max(DefaultReconnectMax, o.ReconnectMin)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Broker is a RabbitMQ client implementing broker.Broker. It holds one
// connection, re-established with backoff when lost. Each Publish call in
// flight has a confirm-mode channel of its own (idle ones are reused); each
// subscription has its own channel.
type Broker struct {
	opts Options

	mu        sync.Mutex
	conn      *amqp.Connection                        // nil while disconnected
	ready     chan struct{}                           // closed while conn != nil
	closer    adapterkit.CloseOnce                    // Close runs once; concurrent calls wait for it
	closing   chan struct{}                           // closed by Close
	subs      adapterkit.Subscriptions[*subscription] // open ones; shut (closed) first by Close
	superDone chan struct{}

	pubMu    sync.Mutex // guards pubIdle
	pubIdle  []*pubChannel
	pubOnce  sync.Once
	pubSlots chan struct{} // one per publishing channel in use (maxPublishers)

	adminMu  sync.Mutex // serializes declarations (synchronous RPCs)
	admin    *amqp.Channel
	declared map[string]bool // exchanges and retry queues declared on the current connection

	serverVersion string
	retryQuorum   bool // retry queues are quorum queues (server 3.10+)
	// requeue: Nack(0) uses basic.nack requeue=true (quorum queues before
	// RabbitMQ 4.0, which count redeliveries in x-delivery-count and have
	// no default delivery limit); otherwise it re-publishes.
	requeue bool

	blocked atomic.Bool // the server blocks publishers (connection.blocked: memory or disk alarm)
}

// watchBlocked follows connection.blocked / unblocked notifications of conn.
// The goroutine ends when the connection closes.
func (b *Broker) watchBlocked(conn *amqp.Connection) {
	ch := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	b.blocked.Store(false)
	go func() {
		for x := range ch {
			b.blocked.Store(x.Active)
			if x.Active {
				b.opts.Logger.Warn("rabbitmq: server blocks publishers", "reason", x.Reason)
			}
		}
	}()
}

// waitUnblocked waits while the server blocks publishers (a publish would
// block on the socket without regard to ctx), until ctx ends.
func (b *Broker) waitUnblocked(ctx context.Context) error {
	for b.blocked.Load() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrBlocked, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

var (
	_ broker.Broker      = (*Broker)(nil)
	_ broker.Provisioner = (*Broker)(nil)
)

// New connects to the server and returns a Broker. It fails if the first
// connection cannot be made; later losses are repaired in the background.
func New(ctx context.Context, opts Options) (*Broker, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	b := &Broker{
		opts:      opts,
		ready:     make(chan struct{}),
		closing:   make(chan struct{}),
		superDone: make(chan struct{}),
		declared:  map[string]bool{},
	}
	conn, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	b.conn = conn
	b.watchBlocked(conn)
	close(b.ready)
	b.serverVersion, _ = conn.Properties["version"].(string)
	maj, min := parseVersion(b.serverVersion)
	if b.opts.QueueType == "" {
		b.opts.QueueType = QueueClassic
		if maj > 3 || (maj == 3 && min >= 8) {
			b.opts.QueueType = QueueQuorum
		}
	}
	b.retryQuorum = b.opts.QueueType == QueueQuorum && (maj > 3 || (maj == 3 && min >= 10))
	b.requeue = b.opts.QueueType == QueueQuorum && maj == 3
	go b.supervise(conn)
	return b, nil
}

// parseVersion reads "3.10.8" as 3, 10 (0, 0 if unknown: treated as old).
func parseVersion(v string) (major, minor int) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0
	}
	major, _ = strconv.Atoi(parts[0])
	minor, _ = strconv.Atoi(parts[1])
	return major, minor
}

// ServerVersion is the RabbitMQ version the first connection reported.
func (b *Broker) ServerVersion() string { return b.serverVersion }

// QueueType is the effective queue type of group queues.
func (b *Broker) QueueType() string { return b.opts.QueueType }

func (b *Broker) dial(ctx context.Context) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(b.opts.ConnectionName)
	cfg := amqp.Config{Properties: props, Heartbeat: 10 * time.Second, Locale: "en_US"}
	if b.opts.TLS != nil {
		cfg.TLSClientConfig = b.opts.TLS.Clone()
	}
	type res struct {
		c   *amqp.Connection
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := amqp.DialConfig(b.opts.URL, cfg)
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("rabbitmq: connect to %s: %w", redact.URL(b.opts.URL), redact.Err(r.err, b.opts.URL))
		}
		return r.c, nil
	case <-ctx.Done():
		go func() { // do not leak the connection if it arrives late
			if r := <-ch; r.c != nil {
				_ = r.c.Close()
			}
		}()
		return nil, fmt.Errorf("rabbitmq: connect: %w", ctx.Err())
	}
}

// supervise watches the connection and re-establishes it when it is lost,
// until Close.
func (b *Broker) supervise(conn *amqp.Connection) {
	defer close(b.superDone)
	log := b.opts.Logger
	for {
		closeCh := conn.NotifyClose(make(chan *amqp.Error, 1))
		var reason *amqp.Error
		select {
		case reason = <-closeCh:
		case <-b.closing:
			return
		}
		b.mu.Lock()
		if b.subs.Closed() {
			b.mu.Unlock()
			return
		}
		b.conn = nil
		b.ready = make(chan struct{})
		b.mu.Unlock()
		b.adminMu.Lock()
		b.admin = nil
		clear(b.declared)
		b.adminMu.Unlock()
		log.Warn("rabbitmq: connection lost, reconnecting", "reason", reason)

		delay := b.opts.ReconnectMin
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			go func() {
				select {
				case <-b.closing:
					cancel()
				case <-ctx.Done():
				}
			}()
			c, err := b.dial(ctx)
			cancel()
			if err == nil {
				conn = c
				break
			}
			log.Warn("rabbitmq: reconnect failed", "err", err, "retry_in", delay)
			select {
			case <-b.closing:
				return
			case <-time.After(delay):
			}
			delay = backoff.Policy{Min: b.opts.ReconnectMin, Max: b.opts.ReconnectMax}.Next(delay)
		}
		b.mu.Lock()
		if b.subs.Closed() {
			b.mu.Unlock()
			_ = conn.Close()
			return
		}
		b.conn = conn
		b.watchBlocked(conn)
		close(b.ready)
		b.mu.Unlock()
		log.Info("rabbitmq: reconnected")
	}
}

// connection returns the current connection, waiting (bounded by ctx and
// ConnectTimeout) while a reconnection is in progress.
func (b *Broker) connection(ctx context.Context) (*amqp.Connection, error) {
	var timeout <-chan time.Time
	for {
		b.mu.Lock()
		if b.subs.Closed() {
			b.mu.Unlock()
			return nil, broker.ErrClosed
		}
		conn, ready := b.conn, b.ready
		b.mu.Unlock()
		if conn != nil && !conn.IsClosed() {
			return conn, nil
		}
		if conn != nil { // closed, supervisor has not noticed yet
			ready = nil
			if timeout == nil {
				timeout = time.After(b.opts.ConnectTimeout)
			}
			select {
			case <-time.After(5 * time.Millisecond):
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %w", ErrNotConnected, ctx.Err())
			case <-timeout:
				return nil, fmt.Errorf("%w after %v", ErrNotConnected, b.opts.ConnectTimeout)
			}
		}
		if timeout == nil {
			timeout = time.After(b.opts.ConnectTimeout)
		}
		select {
		case <-ready:
		case <-b.closing:
			return nil, broker.ErrClosed
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNotConnected, ctx.Err())
		case <-timeout:
			return nil, fmt.Errorf("%w after %v", ErrNotConnected, b.opts.ConnectTimeout)
		}
	}
}

func (b *Broker) isClosed() bool { return b.subs.Closed() }

// Capabilities reports what this adapter guarantees.
func (b *Broker) Capabilities() broker.Capabilities {
	return broker.Capabilities{
		Name:              "rabbitmq",
		Ordered:           true,
		OrderedPerSubject: false,
		NativeDelay:       false,
		NativeDedupe:      false,
		RedeliverToTail:   true, // Nack(delay) re-publishes through a retry queue to the queue's tail
		Durable:           true,
		Replay:            false,
		MaxPayload:        b.opts.MaxMessageSize,
	}
}

// Close closes every subscription (waiting for each until ctx ends), the
// publishing channel and the connection. It is idempotent.
func (b *Broker) Close(ctx context.Context) error { return b.closer.Close(ctx, b.close) }

func (b *Broker) close(ctx context.Context) error {
	// From here Publish, Subscribe and Provision return ErrClosed; the
	// connection stays open while the subscriptions drain. (The supervisor
	// checks closed under b.mu before it installs a connection: one it
	// installs after this is refused, one before is closed below.)
	_ = b.subs.CloseAll(ctx)
	b.mu.Lock()
	close(b.closing)
	conn := b.conn
	b.conn = nil
	b.mu.Unlock()
	<-b.superDone
	b.closePublishers()
	var err error
	if conn != nil && !conn.IsClosed() {
		if cerr := conn.Close(); cerr != nil && !errors.Is(cerr, amqp.ErrClosed) {
			err = fmt.Errorf("rabbitmq: close: %w", cerr)
		}
	}
	return err
}

// sizeWhere names the size limit in a *eventkit.SizeError.
const sizeWhere = "rabbitmq Options.MaxMessageSize"
