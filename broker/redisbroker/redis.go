package redisbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
	"github.com/eventkit/eventkit/internal/redact"
)

// Defaults of Options.
const (
	// DefaultPrefix is put before a topic to make its stream key.
	DefaultPrefix = "eventkit:"
	// DefaultMaxPayload is the default limit on an event's size (payload
	// plus attributes): eventkit.DefaultMaxSize, 1 MiB + 64 KiB. Redis itself
	// accepts up to proto-max-bulk-len (512 MB) per field.
	DefaultMaxPayload = eventkit.DefaultMaxSize
	// DefaultBlock is how long one XREADGROUP waits for new entries. It
	// bounds how long Close waits for the reader and how late a Nack(0) is
	// redelivered on an idle stream.
	DefaultBlock = 100 * time.Millisecond
)

// Where a group starts reading when Subscribe creates it.
const (
	// StartOldest makes a new group read the stream from its first entry
	// (XGROUP CREATE ... 0): events published before the group existed are
	// delivered, as far as MaxLen trimming kept them (Capabilities.Replay).
	StartOldest = "0"
	// StartNewest makes a new group read only entries added after it was
	// created (XGROUP CREATE ... $).
	StartNewest = "$"
)

// Options configure a Broker. The zero value (plus URL or Client) is usable.
type Options struct {
	// URL of the server ("redis://127.0.0.1:6379/0"), used when Client is
	// nil. go-redis options go in the query ("?pool_size=50"): each
	// subscription's blocking XREADGROUP holds a pooled connection, so the
	// pool (10 per CPU by default) must be larger than the number of
	// subscriptions on this broker.
	URL string
	// TLS, if set, is the TLS configuration of the connection URL opens
	// (its CA, client certificate, server name), in place of the default
	// one of rediss:// (the system roots); with redis:// it turns TLS on.
	TLS *tls.Config
	// Client is an existing client to use instead of URL. The broker does
	// not close it. Blocking reads hold one pooled connection per
	// subscription: size the pool accordingly.
	Client goredis.UniversalClient
	// Prefix is put before the topic to make the stream key (default
	// "eventkit:"; topic "orders" is stream "eventkit:orders").
	Prefix string
	// MaxLen caps each stream at about this many entries (XADD MAXLEN ~).
	// 0 (the default) means unlimited. Trimming drops the oldest entries
	// even if a group has not read or acked them yet: see the package doc.
	MaxLen int64
	// MaxPayload is the largest event accepted by Publish (payload plus
	// attributes; default DefaultMaxPayload). Larger events fail with an
	// error wrapping eventkit.ErrTooLarge.
	MaxPayload int
	// GroupStart is where a group that Subscribe creates starts reading:
	// StartOldest (default) or StartNewest. An existing group is left as is.
	GroupStart string
	// Block is the BLOCK of each XREADGROUP (default DefaultBlock).
	Block time.Duration
	// ReadBatch caps the COUNT of one XREADGROUP (default 128; never more
	// than the subscription's free MaxInFlight slots).
	ReadBatch int
	// PruneAfter: when Subscribe joins a group, it deletes the group's
	// consumers that have no pending entries and have been idle this long
	// (left behind by crashed processes). Default 1h; negative disables it.
	// A closing subscription deletes its own consumer if it has no pending
	// entries left.
	PruneAfter time.Duration
	// SyncAck makes Ack and Term wait until their XACK is done and return
	// its error. By default they return once the ack is queued; a
	// background flusher sends queued acks together in one XACK.
	SyncAck bool
}

func (o *Options) setDefaults() {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.GroupStart == "" {
		o.GroupStart = StartOldest
	}
	if o.Block <= 0 {
		o.Block = DefaultBlock
	}
	if o.Block < time.Millisecond {
		o.Block = time.Millisecond
	}
	if o.PruneAfter == 0 {
		o.PruneAfter = time.Hour
	}
	if o.ReadBatch <= 0 {
		o.ReadBatch = 128
	}
}

func (o *Options) validate() error {
	if o.Client == nil && o.URL == "" {
		return errors.New("redis broker: Options.URL or Options.Client is required")
	}
	if o.GroupStart != StartOldest && o.GroupStart != StartNewest {
		return fmt.Errorf("redis broker: Options.GroupStart %q must be %q or %q", o.GroupStart, StartOldest, StartNewest)
	}
	if o.MaxLen < 0 {
		return errors.New("redis broker: Options.MaxLen must not be negative")
	}
	return nil
}

// Broker is a broker.Broker on Redis Streams. It is safe for concurrent use.
type Broker struct {
	opts    Options
	rdb     goredis.UniversalClient
	ownsRDB bool
	durable bool

	mu     sync.RWMutex                            // held for reading by Publish, Subscribe and Provision, for writing by Close
	subs   adapterkit.Subscriptions[*subscription] // shut by Close under mu
	closer adapterkit.CloseOnce                    // Close runs once; concurrent calls wait for it
}

var _ broker.Broker = (*Broker)(nil)

// New connects to Redis (checking it with PING) and returns a Broker.
func New(ctx context.Context, opts Options) (*Broker, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	b := &Broker{opts: opts, rdb: opts.Client}
	if b.rdb == nil {
		o, err := goredis.ParseURL(opts.URL)
		if err != nil {
			return nil, fmt.Errorf("redis broker: %s: %w", redact.URL(opts.URL), redact.Err(err, opts.URL))
		}
		if opts.TLS != nil {
			o.TLSConfig = opts.TLS
		}
		b.rdb = goredis.NewClient(o)
		b.ownsRDB = true
	}
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		if b.ownsRDB {
			_ = b.rdb.Close()
		}
		return nil, fmt.Errorf("redis broker: ping: %w", err)
	}
	// Durable only if the server writes an append-only file and fsyncs it
	// before it replies: with appendfsync everysec (the default) an XADD
	// Publish reported as accepted can be lost in a machine crash. CONFIG
	// may be disabled (managed services): then we cannot tell and say false.
	if v, err := b.rdb.ConfigGet(ctx, "append*").Result(); err == nil {
		b.durable = strings.EqualFold(v["appendonly"], "yes") && strings.EqualFold(v["appendfsync"], "always")
	}
	return b, nil
}

// Client returns the underlying go-redis client.
func (b *Broker) Client() goredis.UniversalClient { return b.rdb }

// StreamKey returns the key of the stream that carries topic.
func (b *Broker) StreamKey(topic string) string { return b.opts.Prefix + topic }

// Capabilities reports what this broker guarantees. Durable is true only
// when the server had appendonly yes and appendfsync always when New ran.
func (b *Broker) Capabilities() broker.Capabilities {
	return broker.Capabilities{
		Name:              "redis",
		Ordered:           true,
		OrderedPerSubject: false,
		NativeDelay:       false,
		NativeDedupe:      false,
		RedeliverToTail:   false, // a nacked entry is kept by the subscription and redelivered first when due
		Durable:           b.durable,
		Replay:            b.opts.GroupStart == StartOldest,
		MaxPayload:        b.opts.MaxPayload,
	}
}

// Publish appends events to the topic's stream with XADD, all in one
// pipeline (one round trip), and returns when Redis has replied to every
// XADD. Failed entries are named in a *broker.PublishError.
func (b *Broker) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.subs.Closed() {
		return broker.ErrClosed
	}
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	if err := adapterkit.ValidateEventsAt(topic, b.opts.MaxPayload, "redis broker Options.MaxPayload", events); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	key := b.StreamKey(topic)
	pipe := b.rdb.Pipeline()
	cmds := make([]*goredis.StringCmd, len(events))
	for i, e := range events {
		cmds[i] = pipe.XAdd(ctx, &goredis.XAddArgs{
			Stream: key,
			MaxLen: b.opts.MaxLen,
			Approx: b.opts.MaxLen > 0,
			ID:     "*",
			Values: encode(e),
		})
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	var pe *broker.PublishError
	for i, c := range cmds {
		if err := c.Err(); err != nil {
			if pe == nil {
				pe = &broker.PublishError{Topic: topic}
			}
			pe.Failed = append(pe.Failed, broker.FailedEvent{Index: i, ID: events[i].ID, Err: fmt.Errorf("redis XADD %s: %w", key, err)})
		}
	}
	if pe != nil {
		return pe
	}
	return nil
}

// Subscribe creates the consumer group (idempotently, with the stream if
// needed) and starts a subscription with its own consumer name. See the
// package doc for how deliveries are settled.
func (b *Broker) Subscribe(ctx context.Context, topic, group string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	if err := adapterkit.CheckSubscribe(topic, group, h, "redis broker"); err != nil {
		return nil, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.subs.Closed() {
		return nil, broker.ErrClosed
	}
	key := b.StreamKey(topic)
	if err := b.createGroup(ctx, key, group); err != nil {
		return nil, err
	}
	if b.opts.PruneAfter > 0 {
		// Best effort: a failure here does not stop the subscription.
		_ = prune.Run(ctx, b.rdb, []string{key}, group, b.opts.PruneAfter.Milliseconds(), "").Err()
	}
	s := newSubscription(ctx, b, topic, key, group, h, adapterkit.ApplySubscribeOptions(opts...))
	if !b.subs.Add(s) { // cannot happen: Close shuts subs under b.mu
		s.hcancel()
		return nil, broker.ErrClosed
	}
	s.start()
	return s, nil
}

func (b *Broker) createGroup(ctx context.Context, key, group string) error {
	err := b.rdb.XGroupCreateMkStream(ctx, key, group, b.opts.GroupStart).Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("redis broker: XGROUP CREATE %s %s: %w", key, group, err)
	}
	return nil
}

func (b *Broker) forget(s *subscription) { b.subs.Remove(s) }

// Close closes every subscription (waiting for each until ctx ends) and,
// if the broker made its client from Options.URL, the client.
func (b *Broker) Close(ctx context.Context) error { return b.closer.Close(ctx, b.close) }

func (b *Broker) close(ctx context.Context) error {
	b.mu.Lock() // waits for the Publish, Subscribe and Provision calls in flight
	subs := b.subs.Shut()
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Close(ctx)
			// A handler still running after Close's ctx ended may settle
			// (a nack hands its entry back): keep the connection for it
			// as long as ctx allows.
			select {
			case <-s.dispDone:
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
	if b.ownsRDB {
		return b.rdb.Close()
	}
	return nil
}
