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
	// OrderedBySubject handles events with the same subject one at a time,
	// in delivery order, while different subjects run in parallel. A failed
	// event is retried in place (its worker sleeps through the backoff) so
	// later events of its subject cannot overtake it; after the last attempt
	// it is dead-lettered and the subject moves on. Events without a subject
	// share one key (they are ordered among themselves).
	OrderedBySubject bool
	// StrictOrder applies the events of each subject strictly in the order
	// of their subject sequence numbers (eventkit.SubjectSeqExtension,
	// stamped by the SQL outbox stores), with any number of competing
	// consumers, across crashes and redeliveries; see "Strict order" in
	// the package doc. It needs an Inbox that implements inbox.Sequencer
	// (sqlinbox), implies OrderedBySubject, and cannot be combined with
	// InboxBatch.
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
	// dead-lettering, in every mode. With OrderedBySubject a retry in place
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
	// InboxBatch, if > 1, turns on batch mode: a worker takes up to
	// InboxBatch deliveries that are ready (waiting at most InboxBatchWait
	// for more after the first) and processes them in one inbox
	// transaction, with one commit for all (see inbox.Batcher). Inbox must
	// implement inbox.Batcher (sqlinbox does); StrictOrder cannot batch.
	// With OrderedBySubject a batch takes the waiting events of several
	// subjects, each subject's in order. A handler error fails only its
	// own event, which is retried or dead-lettered as usual (with
	// OrderedBySubject, retried in place before the later events of its
	// subject, which the other subjects of its batch wait for); the others
	// are acked after the commit (on PostgreSQL the events before it run a
	// second time, the ones after it in the next batch). If the transaction
	// fails as a whole (commit error, lost connection), nothing of it
	// happened and each of its events is processed again at once, alone.
	InboxBatch int
	// InboxBatchWait is how long a worker waits for more deliveries after
	// the first one of a batch (default 2ms; it never waits when the batch
	// is full). Only used when InboxBatch > 1.
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
	if c.StrictOrder {
		if _, ok := c.Inbox.(inbox.Sequencer); !ok {
			return c, fmt.Errorf("consumer: StrictOrder needs an Inbox that implements inbox.Sequencer, such as sqlinbox (have %T)", c.Inbox)
		}
		if c.InboxBatch > 1 {
			return c, errors.New("consumer: InboxBatch cannot be combined with StrictOrder")
		}
		c.OrderedBySubject = true
	}
	if c.InboxBatch > 1 {
		if _, ok := c.Inbox.(inbox.Batcher); !ok {
			return c, fmt.Errorf("consumer: InboxBatch needs an Inbox that implements inbox.Batcher (have %T)", c.Inbox)
		}
		if c.InboxBatchWait <= 0 {
			c.InboxBatchWait = 2 * time.Millisecond
		}
	} else {
		c.InboxBatch = 1
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = max(4*c.Concurrency, 32)
		if c.InboxBatch > 1 {
			// Room for every worker to fill a batch would be
			// Concurrency*InboxBatch; keep the default bounded.
			c.MaxInFlight = max(c.MaxInFlight, min(c.Concurrency*c.InboxBatch, 1024), 2*c.InboxBatch)
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
