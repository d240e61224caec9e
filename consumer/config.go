package consumer

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/internal/backoff"
)

// Config configures a Consumer. The zero value works: one worker per
// subscription, no inbox, 5 attempts with exponential backoff, dead letters
// to "<topic>.dlq" through the subscriber when it is also a publisher.
type Config struct {
	// Concurrency is the number of workers per subscription (default 1).
	Concurrency int
	// MaxInFlight bounds the deliveries of one subscription that are
	// received and not yet settled: queued for a worker, being handled, or
	// waiting for a retry in place. It is passed to the broker
	// (broker.WithMaxInFlight) and enforced by the runtime as well, so a
	// slow handler stops fetching instead of growing memory. Network
	// adapters also use it as their prefetch window. Default
	// max(4*Concurrency, 32).
	MaxInFlight int
	// Mode is the order and batching of every route (default Unordered):
	// Unordered, PerSubject, Strict, Batched or PerSubjectBatched. A route
	// can have its own (Handle with WithMode). New fails if Mode is set
	// (not Unordered, which is the zero Mode) together with any of the
	// deprecated OrderedBySubject, StrictOrder, InboxBatch (> 1) or
	// InboxBatchWait.
	Mode Mode
	// OrderedBySubject handles events with the same subject one at a time,
	// in delivery order, while different subjects run in parallel: see
	// PerSubject. With InboxBatch > 1 it is PerSubjectBatched.
	//
	// Deprecated: use Mode: PerSubject() (or PerSubjectBatched).
	OrderedBySubject bool
	// StrictOrder applies the events of each subject strictly in the order
	// of their subject sequence numbers: see Strict. It needs an Inbox that
	// implements inbox.Sequencer (sqlinbox). With InboxBatch > 1 it is
	// StrictBatched.
	//
	// Deprecated: use Mode: Strict() (or StrictBatched).
	StrictOrder bool
	// HandlerTimeout bounds one handler call (default 30s). The handler's
	// context is also cancelled when shutdown runs out of time.
	HandlerTimeout time.Duration
	// ShutdownTimeout is how long Run waits, after its context ends, for
	// handler calls in progress to finish; then their contexts are cancelled
	// and their deliveries nacked (default 10s).
	ShutdownTimeout time.Duration
	// AckWait is passed to the broker (broker.WithAckWait): how long a
	// delivery may stay unsettled before the broker gives it to another
	// consumer, which is also how late the events a killed consumer held
	// come back on brokers that notice only by the ack wait (NATS, Redis).
	// Default: HandlerTimeout + 30s, long enough for one handler call plus
	// dead-lettering, in every mode. In PerSubject order a retry in place
	// may outlast it (slow handlers, long backoffs): then the runtime
	// extends the delivery's ack wait before each retry where the broker can
	// (broker.Extender: NATS); elsewhere the broker redelivers a copy, which
	// the inbox drops as a duplicate (without an inbox the handler must be
	// idempotent). Set it longer for handlers that may need longer.
	AckWait time.Duration
	// GroupMaxInFlight, if > 0, bounds the deliveries of the whole group
	// (every consumer of it together) that are unsettled at once, on
	// brokers that keep such a limit on the server (NATS MaxAckPending),
	// via broker.WithGroupMaxInFlight. Default: the adapter's (NATS: the
	// subscription's MaxInFlight or its Options.MaxAckPending, whichever
	// is larger). Raise it to Consumers × MaxInFlight when several consumer
	// processes compete, or they share one process's window.
	GroupMaxInFlight int
	// Retry is the retry policy.
	Retry RetryPolicy
	// DeadLetterTopic names the dead-letter topic of a topic (default
	// topic + ".dlq"). Returning "" disables dead letters for that topic:
	// events that exhaust their attempts are then Termed (dropped) and logged.
	DeadLetterTopic func(topic string) string
	// DeadLetterPublisher publishes dead letters. Default: the subscriber,
	// if it is a broker.Publisher. When it is also a broker.Provisioner
	// (every adapter is), Run provisions each dead-letter topic with
	// DeadLetterGroup before it subscribes, so that no dead letter is
	// unroutable or missed before the collector first ran.
	DeadLetterPublisher broker.Publisher
	// DeadLetterGroup is the group provisioned on each dead-letter topic:
	// the group of deadletter.Collect (default deadletter.DefaultGroup).
	DeadLetterGroup string
	// Inbox, if set, makes handling idempotent per (group, event id): see
	// package inbox. With sqlinbox the handler runs inside the inbox's
	// transaction (sqlinbox.Tx(ctx), sqlinbox.PgxTx(ctx)).
	Inbox inbox.Inbox
	// InboxBatch, if > 1, turns on batch mode with batches of up to
	// InboxBatch deliveries in one inbox transaction: see Batched, and
	// PerSubjectBatched for InboxBatch with OrderedBySubject. Inbox must
	// implement inbox.Batcher (sqlinbox does); with StrictOrder it is
	// StrictBatched, and Inbox must implement inbox.SequenceBatcher.
	//
	// Deprecated: use Mode: Batched(size, wait), PerSubjectBatched(size, wait)
	// or StrictBatched(size, wait).
	InboxBatch int
	// InboxBatchWait is how long a worker waits for more deliveries after
	// the first one of a batch (default 2ms). Only used when InboxBatch > 1.
	//
	// Deprecated: it is the wait argument of Batched and PerSubjectBatched.
	InboxBatchWait time.Duration
	// InboxRetention, if > 0 and Inbox is an inbox.Pruner (sqlinbox),
	// makes Run delete inbox keys older than this every
	// InboxPruneInterval, in a goroutine that stops with Run. Keep it longer
	// than the broker can redeliver an event (its retention, the longest
	// outage you want to absorb): a duplicate older than the window is
	// handled again.
	InboxRetention time.Duration
	// InboxPruneInterval is how often the inbox is pruned (default
	// InboxRetention/10, at least a minute).
	InboxPruneInterval time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Metrics receives outcomes and latencies (default: none). See
	// NewOTelMetrics.
	Metrics Metrics
	// TracerProvider for the "handle" spans (default otel.GetTracerProvider()).
	TracerProvider trace.TracerProvider
}

// RetryPolicy is exponential backoff with jitter and a maximum number of
// attempts. The delay before attempt n+1 is Initial*Multiplier^(n-1), capped
// at Max, then moved by up to ±Jitter of itself at random.
type RetryPolicy struct {
	// MaxAttempts counts every delivery attempt, the first included
	// (default 5). After the last failed attempt the event is dead-lettered.
	MaxAttempts int
	// Initial delay (default 100ms).
	Initial time.Duration
	// Max delay (default 30s).
	Max time.Duration
	// Multiplier (default 2).
	Multiplier float64
	// Jitter as a fraction of the delay, 0..1 (default 0.2). Negative: none.
	Jitter float64
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 5
	}
	if p.Initial <= 0 {
		p.Initial = 100 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 30 * time.Second
	}
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	if p.Multiplier < 1 {
		p.Multiplier = 2
	}
	if p.Jitter == 0 {
		p.Jitter = 0.2
	}
	if p.Jitter < 0 {
		p.Jitter = -1 // none; kept negative so that defaults applied again keep it
	}
	if p.Jitter > 1 {
		p.Jitter = 1
	}
	return p
}

// Backoff returns the delay after failed attempt n (from 1), with jitter.
func (p RetryPolicy) Backoff(attempt int) time.Duration {
	p = p.withDefaults()
	return backoff.Policy{Min: p.Initial, Max: p.Max, Multiplier: p.Multiplier, Jitter: max(p.Jitter, 0)}.Delay(attempt)
}

func (c Config) withDefaults(sub broker.Subscriber) (Config, error) {
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	c, err := c.normalizeMode()
	if err != nil {
		return c, err
	}
	if c.Mode, err = c.Mode.withDefaults(); err != nil {
		return c, err
	}
	if c.Mode.strict() {
		if _, ok := c.Inbox.(inbox.Sequencer); !ok {
			return c, fmt.Errorf("consumer: strict order (Strict, StrictOrder) needs an Inbox that implements inbox.Sequencer, such as sqlinbox (have %T)", c.Inbox)
		}
	}
	batch := c.Mode.batch()
	if batch > 1 && c.Mode.strict() {
		if _, ok := c.Inbox.(inbox.SequenceBatcher); !ok {
			return c, fmt.Errorf("consumer: strict batch mode (%s) needs an Inbox that implements inbox.SequenceBatcher, such as sqlinbox (have %T)", c.Mode, c.Inbox)
		}
	} else if batch > 1 {
		if _, ok := c.Inbox.(inbox.Batcher); !ok {
			return c, fmt.Errorf("consumer: batch mode (%s) needs an Inbox that implements inbox.Batcher (have %T)", c.Mode, c.Inbox)
		}
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = max(4*c.Concurrency, 32)
		if batch > 1 {
			// Room for every worker to fill a batch would be
			// Concurrency*batch; keep the default bounded.
			c.MaxInFlight = max(c.MaxInFlight, min(c.Concurrency*batch, 1024), 2*batch)
		}
	}
	if c.MaxInFlight < c.Concurrency {
		return c, fmt.Errorf("consumer: MaxInFlight (%d) must be at least Concurrency (%d)", c.MaxInFlight, c.Concurrency)
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = 30 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	c.Retry = c.Retry.withDefaults()
	if c.AckWait <= 0 {
		c.AckWait = c.HandlerTimeout + 30*time.Second
	}
	if c.GroupMaxInFlight < 0 {
		return c, fmt.Errorf("consumer: GroupMaxInFlight (%d) must not be negative", c.GroupMaxInFlight)
	}
	if c.DeadLetterGroup == "" {
		c.DeadLetterGroup = deadletter.DefaultGroup
	}
	if err := broker.ValidateName("dead-letter group", c.DeadLetterGroup); err != nil {
		return c, err
	}
	if c.InboxRetention > 0 && c.InboxPruneInterval <= 0 {
		c.InboxPruneInterval = max(c.InboxRetention/10, time.Minute)
	}
	if c.DeadLetterTopic == nil {
		c.DeadLetterTopic = func(topic string) string { return topic + ".dlq" }
	}
	if c.DeadLetterPublisher == nil {
		if p, ok := sub.(broker.Publisher); ok {
			c.DeadLetterPublisher = p
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if sub == nil {
		return c, errors.New("consumer: nil subscriber")
	}
	return c, nil
}
