package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
	"github.com/eventkit/eventkit/internal/backoff"
	"github.com/eventkit/eventkit/internal/redact"
)

// StreamOptions configure the streams the broker creates for topics. They
// apply when a stream is created; an existing stream is used as it is unless
// Update is set.
type StreamOptions struct {
	// Storage is jetstream.FileStorage (the default: survives a server
	// restart) or jetstream.MemoryStorage (lost when the server stops).
	Storage jetstream.StorageType
	// Replicas is the number of copies in a cluster (default 1).
	Replicas int
	// MaxAge drops events older than this (0: keep forever).
	MaxAge time.Duration
	// MaxBytes bounds the stream's size; the oldest events are dropped
	// beyond it (0: unlimited).
	MaxBytes int64
	// Duplicates is the deduplication window: a message whose Nats-Msg-Id
	// (the event id) was stored within it is dropped (default 2 minutes).
	Duplicates time.Duration
	// Update applies these options to an existing stream
	// (CreateOrUpdateStream) instead of using it as it is.
	Update bool
}

// Options configure a Broker. The zero value is usable.
type Options struct {
	// Name is the NATS connection name shown by the server (default "eventkit").
	Name string
	// CredentialsFile is a credentials file (a user JWT and its NKey seed,
	// as nsc writes it and `nats --creds` reads it) Connect authenticates
	// with. It is checked before dialling: a file that is missing or holds
	// no user JWT and seed fails with ErrCredentials, and naming neither
	// the file's content nor the seed.
	CredentialsFile string
	// NKeySeedFile is a file holding a user's NKey seed (`nats --nkey`)
	// Connect authenticates with; checked like CredentialsFile. A server
	// that refuses the credentials makes Connect fail with an error that
	// wraps nats.ErrAuthorization.
	NKeySeedFile string
	// NATSOptions are added to the connection options Connect uses (after
	// the defaults, so they win).
	NATSOptions []nats.Option
	// StreamPrefix is put before every stream name (letters, digits, '_'
	// and '-'), e.g. "EK_" to keep eventkit's streams apart from others.
	StreamPrefix string
	// Stream configures the streams created for topics.
	Stream StreamOptions
	// PublishWindow bounds the messages of one Publish call awaiting their
	// JetStream ack at once (default 1024). Keep it at least the outbox
	// relay's batch size: a batch larger than the window waits for acks in
	// the middle (measured: 77-83% of a raw relay with 512 for batches of
	// 1,000, 88-95% with 1,000).
	PublishWindow int
	// PublishAckTimeout is how long one message may wait for its JetStream
	// ack before it counts as failed (default 10s). The ctx of Publish
	// bounds the whole call as well.
	PublishAckTimeout time.Duration
	// MaxAckPending, if larger than a subscription's MaxInFlight, is used as
	// the consumer's MaxAckPending instead. By default MaxAckPending equals
	// MaxInFlight, so the server itself never has more than MaxInFlight
	// deliveries of a group unsettled (the group's subscribers share them).
	MaxAckPending int
	// PullExpiry is how long one pull request waits on the server
	// (default 10s; heartbeats every half of it detect a lost request).
	PullExpiry time.Duration
	// ConfirmAcks makes Ack, Nack and Term wait for the server to confirm
	// them (a request/reply round trip each, JetStream's "double ack").
	// Off by default: a plain ack is fire-and-forget, and an ack that is
	// lost makes the event come again after AckWait, which at-least-once
	// delivery allows.
	ConfirmAcks bool
	// DisableDedupe leaves out the Nats-Msg-Id header, so JetStream does
	// not drop a re-published event (Capabilities.NativeDedupe is then
	// false and consumers must dedupe by event id themselves, which the
	// consumer runtime's inbox does). It saves the server's deduplication
	// bookkeeping: measurably faster publishing (see the benchmarks).
	DisableDedupe bool
	// MaxEventSize, if > 0 and below the server's max_payload, is the
	// largest message (headers plus body) Publish sends and a subscription
	// accepts; a larger message is delivered with a DecodeErr wrapping a
	// *eventkit.SizeError (see the package doc, Size limits). Default: the
	// server's max_payload, which already caps every message on the wire.
	MaxEventSize int
	// Logger receives connection events (disconnect, reconnect, errors).
	// Default slog.Default(); slog.New(slog.DiscardHandler) silences it.
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = "eventkit"
	}
	if o.Stream.Storage != jetstream.MemoryStorage {
		o.Stream.Storage = jetstream.FileStorage
	}
	if o.Stream.Replicas <= 0 {
		o.Stream.Replicas = 1
	}
	if o.Stream.Duplicates <= 0 {
		o.Stream.Duplicates = 2 * time.Minute
	}
	if o.PublishWindow <= 0 {
		o.PublishWindow = 1024
	}
	if o.PublishAckTimeout <= 0 {
		o.PublishAckTimeout = 10 * time.Second
	}
	if o.PullExpiry <= 0 {
		o.PullExpiry = 10 * time.Second
	}
	if o.PullExpiry < 2*time.Second {
		o.PullExpiry = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.StreamPrefix != "" {
		if err := broker.ValidateName("stream prefix", o.StreamPrefix); err != nil || sanitizeName(o.StreamPrefix) != o.StreamPrefix {
			return fmt.Errorf("natsbroker: stream prefix %q may hold only letters, digits, '_' and '-'", o.StreamPrefix)
		}
	}
	return nil
}

// Broker is a broker.Broker on NATS JetStream. Make one with Connect or New
// (or natsembed.Start, which runs a server in the process).
type Broker struct {
	nc         *nats.Conn
	js         jetstream.JetStream // management, PublishRaw; exposed by JetStream()
	pub        jetstream.JetStream // Publish only (see outMsg)
	opts       Options
	ownConn    bool
	maxPayload int    // the limit: max_payload, or Options.MaxEventSize if lower
	serverMax  int    // the server's max_payload
	sizeWhere  string // names maxPayload in size errors

	closer adapterkit.CloseOnce                    // Close runs once; concurrent calls wait for it
	subs   adapterkit.Subscriptions[*subscription] // open ones; closed by Close

	mu      sync.Mutex        // guards streams
	streams map[string]string // topic -> stream name, provisioned
}

var _ broker.Broker = (*Broker)(nil)

// ConnectOptions returns the connection options Connect uses: the name,
// reconnecting forever with exponential backoff (100ms doubling to 5s, with
// jitter), a 10s ping interval to notice dead connections, and handlers
// that log to logger (nil: slog.Default()).
func ConnectOptions(name string, logger *slog.Logger) []nats.Option {
	if logger == nil {
		logger = slog.Default()
	}
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.PingInterval(10 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil && nc.IsClosed() {
				return // our own Close, not a lost connection
			}
			logger.Warn("nats: disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats: reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			logger.Error("nats: async error", "err", err)
		}),
	}
}

// reconnectDelay is 100ms doubling per attempt up to 5s, plus up to 20% jitter.
func reconnectDelay(attempts int) time.Duration {
	return backoff.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.1}.Delay(attempts)
}

// Connect dials the NATS server(s) at url ("nats://127.0.0.1:4222", or a
// comma-separated list) with ConnectOptions plus opts.NATSOptions and returns
// a Broker that owns the connection (Close closes it).
func Connect(ctx context.Context, url string, opts Options) (*Broker, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	nopts := ConnectOptions(opts.Name, opts.Logger)
	auth, err := credentialOptions(opts.CredentialsFile, opts.NKeySeedFile)
	if err != nil {
		return nil, err
	}
	nopts = append(append(nopts, auth...), opts.NATSOptions...)
	type result struct {
		nc  *nats.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(url, nopts...)
		ch <- result{nc, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		go func() { // do not leak the connection if it comes up later
			if r := <-ch; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, fmt.Errorf("natsbroker: connect to %s: %w", redact.URL(url), redact.Err(r.err, url))
	}
	b, err := newBroker(r.nc, opts, true)
	if err != nil {
		r.nc.Close()
		return nil, err
	}
	return b, nil
}

// New returns a Broker on an existing connection, which the caller keeps:
// Close does not close it.
func New(nc *nats.Conn, opts Options) (*Broker, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	return newBroker(nc, opts, false)
}

func newBroker(nc *nats.Conn, opts Options, own bool) (*Broker, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: %w", err)
	}
	b := &Broker{
		nc: nc, js: js, opts: opts, ownConn: own, maxPayload: int(nc.MaxPayload()),
		streams: map[string]string{},
	}
	b.serverMax = b.maxPayload
	b.sizeWhere = fmt.Sprintf("nats server max_payload (%d bytes)", b.maxPayload)
	if opts.MaxEventSize > 0 && opts.MaxEventSize < b.maxPayload {
		b.maxPayload = opts.MaxEventSize
		b.sizeWhere = fmt.Sprintf("nats Options.MaxEventSize (%d bytes)", b.maxPayload)
	}
	// A private handle for Publish: its ack callbacks see only outMsgs.
	b.pub, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(1<<30), // each Publish call bounds its own window
		jetstream.WithPublishAsyncAckHandler(b.onAck),
		jetstream.WithPublishAsyncErrHandler(b.onErr),
	)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: %w", err)
	}
	return b, nil
}

// Conn returns the NATS connection.
func (b *Broker) Conn() *nats.Conn { return b.nc }

// JetStream returns the JetStream handle the broker uses.
func (b *Broker) JetStream() jetstream.JetStream { return b.js }

// StreamName returns the name of the stream that holds topic's events.
func (b *Broker) StreamName(topic string) string { return b.opts.StreamPrefix + sanitizeName(topic) }

// ConsumerName returns the name of the durable consumer of group.
func ConsumerName(group string) string { return sanitizeName(group) }

// Capabilities implements broker.Broker.
func (b *Broker) Capabilities() broker.Capabilities {
	return broker.Capabilities{
		Name:         "nats",
		Ordered:      true,
		NativeDelay:  true,
		NativeDedupe: !b.opts.DisableDedupe,
		Durable:      b.opts.Stream.Storage == jetstream.FileStorage,
		Replay:       true,
		MaxPayload:   b.serverMax,
	}
}

// stream returns the stream of topic, creating it if needed. Streams are
// created once per Broker; a stream deleted behind its back is created
// again after a publish to it fails (see forget).
func (b *Broker) stream(ctx context.Context, topic string) (string, error) {
	b.mu.Lock()
	name, ok := b.streams[topic]
	b.mu.Unlock()
	if ok {
		return name, nil
	}
	name = b.StreamName(topic)
	subject := name + ".>"
	so := b.opts.Stream
	cfg := jetstream.StreamConfig{
		Name:        name,
		Description: "eventkit topic " + topic,
		Subjects:    []string{subject},
		Retention:   jetstream.LimitsPolicy,
		Storage:     so.Storage,
		Replicas:    so.Replicas,
		MaxAge:      so.MaxAge,
		MaxBytes:    so.MaxBytes,
		Duplicates:  so.Duplicates,
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = -1
	}
	var err error
	if so.Update {
		// Never update another topic's stream into this one's.
		if s, serr := b.js.Stream(ctx, name); serr == nil {
			err = checkOwner("stream", name, s.CachedInfo().Config.Description, cfg.Description)
		}
		if err == nil {
			_, err = b.js.CreateOrUpdateStream(ctx, cfg)
		}
	} else {
		_, err = b.js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// It exists with another configuration: use it as it is if
			// it holds this topic's subjects and no other topic's events.
			var s jetstream.Stream
			if s, err = b.js.Stream(ctx, name); err == nil && !slices.Contains(s.CachedInfo().Config.Subjects, subject) {
				err = fmt.Errorf("stream %s exists but does not take subject %s (subjects %v): another topic maps to the same stream name",
					name, subject, s.CachedInfo().Config.Subjects)
			}
			if err == nil {
				err = checkOwner("stream", name, s.CachedInfo().Config.Description, cfg.Description)
			}
		}
	}
	if err != nil {
		return "", fmt.Errorf("natsbroker: provision stream %s for topic %q: %w", name, topic, err)
	}
	b.mu.Lock()
	b.streams[topic] = name
	b.mu.Unlock()
	return name, nil
}

// checkOwner rejects a stream or consumer that eventkit made for another
// topic or group mapped to the same name (sanitizeName is not one-to-one:
// "a.b" and "a_b_<hash of a.b>" meet). eventkit writes the original name in
// the description ("eventkit topic a.b"); one it did not write is used as it
// is.
func checkOwner(kind, name, have, want string) error {
	if have == want || !strings.HasPrefix(have, "eventkit ") {
		return nil
	}
	return fmt.Errorf("%w: %s %s already holds %q, not %q: the two names map to the same JetStream name; rename one",
		broker.ErrInvalidTopic, kind, name, strings.TrimPrefix(have, "eventkit "), strings.TrimPrefix(want, "eventkit "))
}

// forget drops topic's stream from the cache, so that the next use checks
// (and if need be creates) it again.
func (b *Broker) forget(topic string) {
	b.mu.Lock()
	delete(b.streams, topic)
	b.mu.Unlock()
}

func (b *Broker) isClosed() bool { return b.subs.Closed() }

// Publish implements broker.Publisher. Every event goes to the subject
// "<stream>.<type>" with its attributes in ce- headers and Nats-Msg-Id set
// to its id; the messages of one call are published asynchronously, at most
// Options.PublishWindow awaiting their ack at once, and Publish returns when
// every ack is in. A re-published event that JetStream drops as a duplicate
// counts as accepted.
func (b *Broker) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	return b.publish(ctx, topic, events, false)
}

// PublishChained implements broker.ChainedPublisher: Publish, except that
// an event whose subject appears earlier in the call is sent only once
// JetStream has acked that earlier event, and fails with broker.ErrNotSent
// without being sent if it failed. Events already sent stay in flight
// meanwhile (up to Options.PublishWindow), so a batch of many subjects
// flows without waiting for the whole call between a subject's events,
// and an event waiting for its subject's earlier one waits in a queue of
// its subject while the events of other subjects behind it are sent. A
// subject's events leave in call order; events without a subject are
// never held.
func (b *Broker) PublishChained(ctx context.Context, topic string, events ...eventkit.Event) error {
	return b.publish(ctx, topic, events, true)
}

var _ broker.ChainedPublisher = (*Broker)(nil)

func (b *Broker) publish(ctx context.Context, topic string, events []eventkit.Event, chain bool) error {
	if b.isClosed() {
		if len(events) == 0 {
			return broker.ErrClosed
		}
		return adapterkit.FailAll(topic, events, broker.ErrClosed)
	}
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	if err := adapterkit.ValidateEventsAt(topic, b.maxPayload, b.sizeWhere, events); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return adapterkit.FailAll(topic, events, err)
	}
	stream, err := b.stream(ctx, topic)
	if err != nil {
		return adapterkit.FailAll(topic, events, err)
	}
	msgs := make([]outMsg, len(events))
	a := newArena(events)
	var tooLarge []error // nil, or per event: its size error
	var lastType, lastSubject string
	for i := range events {
		e := &events[i]
		if e.Type != lastType || lastSubject == "" {
			lastType, lastSubject = e.Type, stream+"."+typeToken(e.Type)
		}
		h, n := encodeHeadersSize(e, b.opts.DisableDedupe, a)
		if n > b.maxPayload {
			if tooLarge == nil {
				tooLarge = make([]error, len(events))
			}
			tooLarge[i] = b.sizeError(e.ID, n)
		}
		msgs[i].Msg = nats.Msg{Subject: lastSubject, Header: h, Data: e.Data}
	}
	if tooLarge != nil {
		return adapterkit.NotSentWith(topic, events, tooLarge, "another event of the call is too large")
	}
	return b.send(ctx, topic, events, msgs, chain)
}

// outMsg is one message of a Publish call. The JetStream handle b.pub hands
// &outMsg.Msg back to onAck/onErr, which recover the outMsg from it: b.pub
// is private and publishes nothing else, so every message it reports on is
// an outMsg.
type outMsg struct {
	nats.Msg // first field
	call     *pubCall
	idx      int
}

// pubCall tracks the acks of one Publish call.
type pubCall struct {
	mu      sync.Mutex
	pending int     // sent, neither acked nor failed
	state   []uint8 // per message: 0 unsent or waiting, 1 acked, 2 failed
	errs    []error // per failed message
	failed  int     // messages in state 2
	gaveUp  bool    // the caller stopped waiting; late answers are ignored
	need    int     // the caller waits for pending < need (0: nobody waits)
	any     bool    // the caller waits for any message to be settled
	wake    chan struct{}
}

func (c *pubCall) settle(i int, err error) {
	c.mu.Lock()
	if c.gaveUp || c.state[i] != 0 {
		c.mu.Unlock()
		return
	}
	c.pending--
	if err != nil {
		c.state[i], c.errs[i] = 2, err
		c.failed++
	} else {
		c.state[i] = 1
	}
	wake := c.need > 0 && c.pending < c.need || c.any
	if wake {
		c.need, c.any = 0, false
	}
	c.mu.Unlock()
	if wake {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

func outOf(m *nats.Msg) *outMsg { return (*outMsg)(unsafe.Pointer(m)) }

func (b *Broker) onAck(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
	o := outOf(m)
	o.call.settle(o.idx, nil)
}

func (b *Broker) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	o := outOf(m)
	o.call.settle(o.idx, err)
}

// send publishes msgs asynchronously, at most PublishWindow awaiting their
// ack at once, and waits for every ack (or ctx, or PublishAckTimeout without
// any ack arriving). With chain, a message whose subject an earlier message
// of the call has is sent only once that one is settled (sendChained).
func (b *Broker) send(ctx context.Context, topic string, events []eventkit.Event, msgs []outMsg, chain bool) error {
	c := &pubCall{state: make([]uint8, len(msgs)), errs: make([]error, len(msgs)), wake: make(chan struct{}, 1)}
	window := b.opts.PublishWindow
	var stall *time.Timer
	defer func() {
		if stall != nil {
			stall.Stop()
		}
	}()
	// block waits, under c.mu, until ready() holds, arming settle's wake-up
	// with arm() before each wait; an error if ctx ended or no ack came
	// for PublishAckTimeout.
	block := func(ready func() bool, arm func()) error {
		for {
			c.mu.Lock()
			if ready() {
				c.mu.Unlock()
				return nil
			}
			arm()
			c.mu.Unlock()
			if stall == nil {
				stall = time.NewTimer(b.opts.PublishAckTimeout)
			} else {
				stall.Reset(b.opts.PublishAckTimeout)
			}
			select {
			case <-c.wake:
			case <-ctx.Done():
				return ctx.Err()
			case <-stall.C:
				return fmt.Errorf("%w: no ack for %v", jetstream.ErrAsyncPublishTimeout, b.opts.PublishAckTimeout)
			}
		}
	}
	// wait blocks until fewer than limit messages are pending.
	wait := func(limit int) error {
		return block(func() bool { return c.pending < limit }, func() { c.need = limit })
	}
	var stop error
	if chain {
		stop = b.sendChained(c, events, msgs, window, block)
	} else {
		stop = b.sendInOrder(c, events, msgs, window, wait)
	}
	if stop == nil {
		stop = wait(1)
	}
	c.mu.Lock()
	c.gaveUp = true
	var pe *broker.PublishError
	for i := range msgs {
		var err error
		switch {
		case c.state[i] == 2:
			err = b.publishErr(topic, c.errs[i])
		case c.state[i] == 0:
			err = stop
		default:
			continue
		}
		if pe == nil {
			pe = &broker.PublishError{Topic: topic}
		}
		pe.Failed = append(pe.Failed, broker.FailedEvent{Index: i, ID: events[i].ID, Err: err})
	}
	c.mu.Unlock()
	if pe != nil {
		return pe
	}
	return nil
}

// sendInOrder sends msgs in call order, at most window awaiting their ack
// (wait blocks for that). A subject with an event known to have failed
// sends nothing more (its later events fail with broker.ErrNotSent); an
// event sent before its subject's earlier failure was known stays sent.
func (b *Broker) sendInOrder(c *pubCall, events []eventkit.Event, msgs []outMsg, window int, wait func(limit int) error) error {
	var stop error
	// Subjects with an event known to have failed: their later events are
	// not sent (see the package doc). Rebuilt when failures come in.
	var failedSubjects map[string]bool
	known := 0
	for i := range msgs {
		if stop = wait(window); stop != nil {
			break
		}
		subject := events[i].Subject
		msgs[i].call, msgs[i].idx = c, i
		c.mu.Lock()
		if c.failed > known && subject != "" {
			known = c.failed
			for j := range i {
				if c.state[j] == 2 && events[j].Subject != "" {
					if failedSubjects == nil {
						failedSubjects = map[string]bool{}
					}
					failedSubjects[events[j].Subject] = true
				}
			}
		}
		if subject != "" && failedSubjects[subject] {
			c.state[i], c.errs[i] = 2, fmt.Errorf("%w: an earlier event of subject %q failed", broker.ErrNotSent, subject)
			c.failed++
			known++
			c.mu.Unlock()
			continue
		}
		c.pending++
		c.mu.Unlock()
		_, err := b.pub.PublishMsgAsync(&msgs[i].Msg)
		if err != nil {
			c.mu.Lock()
			c.pending--
			c.state[i], c.errs[i] = 2, err
			c.failed++
			c.mu.Unlock()
		}
	}
	return stop
}

// chainQ is one subject's state in sendChained.
type chainQ struct {
	last   int   // the subject's latest message sent
	queue  []int // its later messages, waiting for last to be settled
	failed bool  // an event of the subject failed: nothing more is sent
}

// sendChained sends msgs with at most window awaiting their ack, a
// subject's next message only once the one before it is settled (acked:
// sent next; failed: it and the subject's later messages fail with
// broker.ErrNotSent, unsent). A message waiting for its subject does not
// hold up the messages of other subjects behind it in the call: it waits
// in its subject's queue while the call goes on, and is sent as soon as
// its predecessor's ack is in. Messages of one subject leave in call
// order; messages without a subject are never held.
func (b *Broker) sendChained(c *pubCall, events []eventkit.Event, msgs []outMsg, window int, block func(ready func() bool, arm func()) error) error {
	for i := range msgs {
		msgs[i].call, msgs[i].idx = c, i
	}
	subjects := map[string]*chainQ{}
	var waiting []*chainQ // subjects with a non-empty queue
	next, queued := 0, 0
	notSent := func(i int, subject string) {
		c.state[i], c.errs[i] = 2, fmt.Errorf("%w: an earlier event of subject %q failed", broker.ErrNotSent, subject)
		c.failed++
	}
	var out []int
	// collect picks, under c.mu, the messages that can be sent now.
	collect := func() {
		out = out[:0]
		// First the queued messages whose predecessor is settled.
		k := 0
		for _, q := range waiting {
			for len(q.queue) > 0 && c.state[q.last] != 0 {
				i := q.queue[0]
				if c.state[q.last] == 2 || q.failed {
					q.failed = true
					for _, j := range q.queue {
						notSent(j, events[j].Subject)
					}
					queued -= len(q.queue)
					q.queue = nil
					break
				}
				if c.pending+len(out) >= window {
					break
				}
				q.queue = q.queue[1:]
				queued--
				q.last = i
				out = append(out, i)
			}
			if len(q.queue) > 0 {
				waiting[k] = q
				k++
			}
		}
		clear(waiting[k:])
		waiting = waiting[:k]
		// Then the call's next messages, in order.
		for next < len(msgs) && c.pending+len(out) < window {
			i := next
			next++
			subject := events[i].Subject
			if subject == "" {
				out = append(out, i)
				continue
			}
			q := subjects[subject]
			if q == nil {
				q = &chainQ{last: i}
				subjects[subject] = q
				out = append(out, i)
				continue
			}
			if !q.failed && c.state[q.last] == 2 {
				q.failed = true
			}
			switch {
			case q.failed:
				notSent(i, subject)
			case len(q.queue) > 0 || c.state[q.last] == 0:
				if len(q.queue) == 0 {
					waiting = append(waiting, q)
				}
				q.queue = append(q.queue, i)
				queued++
			default:
				q.last = i
				out = append(out, i)
			}
		}
		c.pending += len(out)
	}
	// ready reports, under c.mu, whether collect would pick something.
	ready := func() bool {
		if c.pending >= window {
			return false
		}
		if next < len(msgs) {
			return true
		}
		for _, q := range waiting {
			if c.state[q.last] != 0 {
				return true
			}
		}
		return false
	}
	for next < len(msgs) || queued > 0 {
		c.mu.Lock()
		collect()
		c.mu.Unlock()
		if len(out) == 0 {
			if next >= len(msgs) && queued == 0 {
				break
			}
			if err := block(ready, func() { c.any = true }); err != nil {
				return err
			}
			continue
		}
		for _, i := range out {
			if _, err := b.pub.PublishMsgAsync(&msgs[i].Msg); err != nil {
				c.mu.Lock()
				c.pending--
				c.state[i], c.errs[i] = 2, err
				c.failed++
				c.mu.Unlock()
			}
		}
	}
	return nil
}

// publishErr maps a publish failure; a stream that has gone missing is
// forgotten so that the next Publish creates it again.
func (b *Broker) publishErr(topic string, err error) error {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		b.forget(topic)
	}
	if errors.Is(err, nats.ErrConnectionClosed) && b.isClosed() {
		return fmt.Errorf("%w: %w", broker.ErrClosed, err)
	}
	return err
}

func (b *Broker) sizeError(id string, size int) error {
	return &eventkit.SizeError{ID: id, Size: size, Limit: b.maxPayload, Where: b.sizeWhere}
}

// PublishRaw publishes body with headers to topic's stream as another tool
// would, bypassing eventkit's encoding (for tests of foreign messages).
func (b *Broker) PublishRaw(ctx context.Context, topic string, headers map[string]string, body []byte) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	stream, err := b.stream(ctx, topic)
	if err != nil {
		return err
	}
	m := nats.NewMsg(stream + ".raw")
	for k, v := range headers {
		m.Header.Set(k, v)
	}
	m.Data = body
	_, err = b.js.PublishMsg(ctx, m)
	return err
}

// DeleteTopic deletes topic's stream with every event and group in it.
func (b *Broker) DeleteTopic(ctx context.Context, topic string) error {
	b.forget(topic)
	err := b.js.DeleteStream(ctx, b.StreamName(topic))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	return err
}

// Close closes every subscription (waiting for each until ctx ends), makes
// Publish and Subscribe fail with broker.ErrClosed, and closes the
// connection if the Broker opened it (Connect, natsembed.Start), after
// flushing acks still buffered.
func (b *Broker) Close(ctx context.Context) error { return b.closer.Close(ctx, b.close) }

func (b *Broker) close(ctx context.Context) error {
	_ = b.subs.CloseAll(ctx)
	if b.ownConn {
		if b.nc.IsConnected() {
			fctx, cancel := context.WithTimeout(ctx, time.Second)
			_ = b.nc.FlushWithContext(fctx)
			cancel()
		}
		b.nc.Close()
	}
	return nil
}
