package kafkabroker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

// DefaultMaxMessageBytes is Kafka's default message.max.bytes, used when the
// broker's own setting cannot be read.
const DefaultMaxMessageBytes = 1048588

// Options configures a Broker. Only Brokers is required.
type Options struct {
	// Brokers are the seed brokers, "host:port".
	Brokers []string
	// Partitions is the partition count of topics created on demand
	// (topics and retry topics). Default 6.
	Partitions int32
	// ReplicationFactor of topics created on demand. Default -1: the
	// broker's default.replication.factor.
	ReplicationFactor int16
	// TopicConfigs are extra configs for topics created on demand
	// ("retention.ms", "min.insync.replicas", ...).
	TopicConfigs map[string]*string
	// MaxMessageBytes is the largest record the adapter produces. Default:
	// the broker's message.max.bytes, read at New (DefaultMaxMessageBytes
	// if it cannot be read). Publish rejects bigger events up front.
	MaxMessageBytes int
	// RetryTopic names the retry topic of a group on a topic. Default
	// "<topic>.retry.<group>" (shortened with a hash if over Kafka's 249
	// characters).
	RetryTopic func(topic, group string) string
	// GroupID names the Kafka consumer group of an eventkit group on a
	// topic. eventkit groups are per topic while Kafka's group ids are
	// global, so the default is "<group>@<topic>" ('@' cannot occur in
	// eventkit names, so distinct pairs never share a Kafka group).
	GroupID func(topic, group string) string
	// CommitInterval is how often settled offsets are committed. Default 500ms.
	CommitInterval time.Duration
	// RevokeWait bounds how long a rebalance waits for deliveries of
	// revoked partitions to be settled before committing what is settled
	// and giving the partitions up. Default 5s; it must stay well below
	// the rebalance timeout.
	RevokeWait time.Duration
	// SessionTimeout, HeartbeatInterval and RebalanceTimeout of the
	// consumer groups. Defaults 10s, 1s and 30s.
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	RebalanceTimeout  time.Duration
	// FetchMaxWait is how long a fetch waits for data. Default 500ms.
	FetchMaxWait time.Duration
	// Linger is the producer linger. Default 0: Publish sends at once
	// (records of one Publish call are batched anyway).
	Linger time.Duration
	// ClientOptions are appended to the options of every franz-go client
	// the broker makes (TLS, SASL, logging, ...).
	ClientOptions []kgo.Opt
	// Logger receives errors the adapter cannot return (failed commits,
	// failed retry produces). Default slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Partitions <= 0 {
		o.Partitions = 6
	}
	if o.ReplicationFactor == 0 {
		o.ReplicationFactor = -1
	}
	if o.RetryTopic == nil {
		o.RetryTopic = DefaultRetryTopic
	}
	if o.GroupID == nil {
		o.GroupID = DefaultGroupID
	}
	if o.CommitInterval <= 0 {
		o.CommitInterval = 500 * time.Millisecond
	}
	if o.RevokeWait <= 0 {
		o.RevokeWait = 5 * time.Second
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 10 * time.Second
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = time.Second
	}
	if o.RebalanceTimeout <= 0 {
		o.RebalanceTimeout = 30 * time.Second
	}
	if o.FetchMaxWait <= 0 {
		o.FetchMaxWait = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// DefaultGroupID returns "<group>@<topic>".
func DefaultGroupID(topic, group string) string { return group + "@" + topic }

// CheckTopic checks a topic name for this adapter: broker.ValidateName, and
// no ".retry." inside and no ".retry" at the end. Those are reserved for the
// retry topics ("<topic>.retry.<group>"): with them a user's topic could be
// another group's retry topic, and ("a.retry.b", "c") and ("a", "b.retry.c")
// would share one. Without them the first ".retry." of a retry topic's name
// ends its topic, so distinct (topic, group) pairs never share a retry topic.
func CheckTopic(topic string) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	if strings.Contains(topic, ".retry.") || strings.HasSuffix(topic, ".retry") {
		return fmt.Errorf("%w: topic %q: \".retry.\" and a \".retry\" suffix are reserved for the retry topics (<topic>.retry.<group>)",
			broker.ErrInvalidTopic, topic)
	}
	return nil
}

// DefaultRetryTopic returns "<topic>.retry.<group>", or, if that is longer
// than Kafka's limit of 249 characters, a prefix of it followed by a hash of
// the whole name.
func DefaultRetryTopic(topic, group string) string {
	name := topic + ".retry." + group
	if len(name) <= 249 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return name[:249-17] + "." + hex.EncodeToString(sum[:8])
}

// Broker is a broker.Broker on Kafka. It holds one producer client (also
// used for topic administration); every subscription has its own consumer
// group client.
type Broker struct {
	opts     Options
	cl       *kgo.Client
	adm      *kadm.Client
	maxBytes int // set once in New, before any record is produced
	maxAtom  atomic.Int32

	topics sync.Map // topic name -> struct{}: known to exist

	closer adapterkit.CloseOnce                    // Close runs once; concurrent calls wait for it
	subs   adapterkit.Subscriptions[*Subscription] // open ones; closed by Close
}

var _ broker.Broker = (*Broker)(nil)

// New connects to Kafka. It reads the broker's message.max.bytes (unless
// Options.MaxMessageBytes is set); it fails if no broker answers before ctx
// ends.
func New(ctx context.Context, opts Options) (*Broker, error) {
	opts.defaults()
	if len(opts.Brokers) == 0 {
		return nil, errors.New("kafka: Options.Brokers is empty")
	}
	b := &Broker{opts: opts}
	kopts := []kgo.Opt{
		kgo.SeedBrokers(opts.Brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(opts.Linger),
		kgo.ProducerBatchMaxBytesFn(func(string) int32 { return b.maxAtom.Load() }),
	}
	kopts = append(kopts, opts.ClientOptions...)
	// The client calls the function when a partition is first produced
	// to, which is after New has set the real limit.
	b.maxBytes = DefaultMaxMessageBytes
	b.maxAtom.Store(DefaultMaxMessageBytes)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	b.cl, b.adm = cl, kadm.NewClient(cl)
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka: no broker answers at %v: %w", opts.Brokers, err)
	}
	if opts.MaxMessageBytes > 0 {
		b.maxBytes = opts.MaxMessageBytes
	} else if n, err := b.brokerMaxBytes(ctx); err == nil {
		b.maxBytes = n
	} else {
		opts.Logger.Warn("kafka: cannot read message.max.bytes; assuming the default", "default", DefaultMaxMessageBytes, "err", err)
	}
	b.maxBytes = min(b.maxBytes, 1<<30)
	b.maxAtom.Store(int32(b.maxBytes))
	return b, nil
}

func (b *Broker) brokerMaxBytes(ctx context.Context) (int, error) {
	rcs, err := b.adm.DescribeBrokerConfigs(ctx)
	if err != nil {
		return 0, err
	}
	min := 0
	for _, rc := range rcs {
		if rc.Err != nil {
			continue
		}
		for _, c := range rc.Configs {
			if c.Key != "message.max.bytes" || c.Value == nil {
				continue
			}
			if n, err := strconv.Atoi(*c.Value); err == nil && n > 0 && (min == 0 || n < min) {
				min = n
			}
		}
	}
	if min == 0 {
		return 0, errors.New("message.max.bytes not reported")
	}
	return min, nil
}

// Capabilities: per-subject order (key = subject), durable, replay (a new
// group starts at the beginning of the log); total order only with one
// partition; no native delay or dedupe.
func (b *Broker) Capabilities() broker.Capabilities {
	return broker.Capabilities{
		Name:              "kafka",
		Ordered:           b.opts.Partitions == 1,
		OrderedPerSubject: true,
		// Nack copies the record to the retry topic, read beside the
		// partition: it comes back behind what was already fetched, not
		// behind the whole backlog.
		RedeliverToTail: false,
		Durable:         true,
		Replay:          true,
		MaxPayload:      b.maxBytes,
	}
}

// MaxMessageBytes is the record size limit Publish enforces.
func (b *Broker) MaxMessageBytes() int { return b.maxBytes }

// Client returns the underlying franz-go producer client (for tests and
// tools; do not close it).
func (b *Broker) Client() *kgo.Client { return b.cl }

func (b *Broker) isClosed() bool { return b.subs.Closed() }

// EnsureTopic creates topic with the configured partition count and
// replication unless it exists. Publish and Subscribe call it.
func (b *Broker) EnsureTopic(ctx context.Context, topic string) error {
	if _, ok := b.topics.Load(topic); ok {
		return nil
	}
	resp, err := b.adm.CreateTopics(ctx, b.opts.Partitions, b.opts.ReplicationFactor, b.opts.TopicConfigs, topic)
	if err != nil {
		return fmt.Errorf("kafka: create topic %q: %w", topic, err)
	}
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("kafka: create topic %q: %w", topic, r.Err)
		}
	}
	b.topics.Store(topic, struct{}{})
	return nil
}

// recordOverhead bounds the bytes a record batch adds around one record
// (61-byte batch header plus the record's own varints and attributes).
const recordOverhead = 61 + 32

// recordSize is an upper bound of the encoded size of a one-record batch.
func recordSize(key, value []byte, headers []kgo.RecordHeader) int {
	n := recordOverhead + len(key) + len(value) + 5
	for _, h := range headers {
		n += len(h.Key) + len(h.Value) + 10
	}
	return n
}

// Record encodes e as a Kafka record in CloudEvents binary mode: key =
// subject (nil if empty), value = data, headers "ce_*" and "content-type".
func Record(topic string, e eventkit.Event) *kgo.Record {
	r := &kgo.Record{Topic: topic, Value: e.Data}
	if e.Subject != "" {
		r.Key = []byte(e.Subject)
	}
	r.Headers = make([]kgo.RecordHeader, 0, eventkit.KafkaBinding.HeaderCount(e))
	eventkit.KafkaBinding.Headers(e, func(k, v string) {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	})
	return r
}

// Publish produces every event (concurrently, idempotent producer, acks=all)
// and returns when all are acknowledged. Events with the same subject go to
// the same partition in the order given.
func (b *Broker) Publish(ctx context.Context, topic string, events ...eventkit.Event) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	if err := CheckTopic(topic); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, len(events))
	var invalid []error // nil, or per event: why it cannot be sent
	fail := func(i int, err error) {
		if invalid == nil {
			invalid = make([]error, len(events))
		}
		invalid[i] = err
	}
	for i, e := range events {
		if err := e.Validate(math.MaxInt); err != nil {
			fail(i, err)
			continue
		}
		r := Record(topic, e)
		if n := recordSize(r.Key, r.Value, r.Headers); n > b.maxBytes {
			fail(i, &eventkit.SizeError{ID: e.ID, Size: n, Limit: b.maxBytes, Where: "kafka message.max.bytes (largest record the broker accepts)"})
			continue
		}
		recs[i] = r
	}
	if invalid != nil {
		return adapterkit.NotSentWith(topic, events, invalid, "another event of the call is invalid or too large")
	}
	if err := b.EnsureTopic(ctx, topic); err != nil {
		return adapterkit.FailAll(topic, events, err)
	}
	// ProduceSync's results come in the order the records completed (each
	// partition on its own), not the order given: find each record's event
	// by the record itself.
	results := b.cl.ProduceSync(ctx, recs...)
	var index map[*kgo.Record]int
	var pe *broker.PublishError
	for _, r := range results {
		if r.Err == nil {
			continue
		}
		if index == nil {
			index = make(map[*kgo.Record]int, len(recs))
			for i, rec := range recs {
				index[rec] = i
			}
		}
		i, ok := index[r.Record]
		if !ok {
			continue // not ours: cannot happen, ProduceSync reports only recs
		}
		err := r.Err
		if errors.Is(err, kgo.ErrClientClosed) {
			err = fmt.Errorf("%w: %w", broker.ErrClosed, err)
		}
		if pe == nil {
			pe = &broker.PublishError{Topic: topic}
		}
		pe.Failed = append(pe.Failed, broker.FailedEvent{Index: i, ID: events[i].ID, Err: err})
	}
	if pe == nil {
		return nil
	}
	slices.SortFunc(pe.Failed, func(a, b broker.FailedEvent) int { return a.Index - b.Index })
	return pe
}

// PublishRecords produces raw records (as a foreign tool would) and waits
// for their acknowledgement. Topics are created if needed.
func (b *Broker) PublishRecords(ctx context.Context, recs ...*kgo.Record) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	for _, r := range recs {
		if err := b.EnsureTopic(ctx, r.Topic); err != nil {
			return err
		}
	}
	return b.cl.ProduceSync(ctx, recs...).FirstErr()
}

// Close closes every subscription (waiting for each until ctx ends) and the
// producer client.
func (b *Broker) Close(ctx context.Context) error { return b.closer.Close(ctx, b.close) }

func (b *Broker) close(ctx context.Context) error {
	subs := b.subs.Shut()
	var wg sync.WaitGroup
	errs := make([]error, len(subs))
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Close(ctx)
		}()
	}
	wg.Wait()
	b.cl.Close()
	return errors.Join(errs...)
}

func (b *Broker) forget(s *Subscription) { b.subs.Remove(s) }
