// Package consumer is the consumer runtime: it runs handlers for the
// deliveries of any broker.Subscriber and acks a delivery only after its
// handler succeeded (with an inbox, after the inbox transaction committed)
// or after its dead letter was accepted by the broker, so delivery is at
// least once and nothing is acked unhandled. With sqlinbox the effects of the
// handler's transaction happen once per (group, event id), across crashes and
// concurrent duplicates. A subscription holds at most Config.MaxInFlight
// unsettled deliveries on Config.Concurrency workers, so a slow handler
// applies backpressure and memory does not grow with the backlog.
//
// Order and batching are a Mode (Config.Mode, or one route's with
// WithMode). Unordered (the default): deliveries run in parallel with no
// order. PerSubject, best effort: events of one subject run one at a time
// in delivery order and different subjects in parallel. The order is the
// broker's delivery order in this process: competing consumers of a group
// can run one subject's events in parallel, and a delivery redelivered
// after its ack wait (or a consumer's crash) comes back after later events
// of its subject. Strict (with an inbox.Sequencer such as sqlinbox): each
// event of a subject is applied only after every earlier event of that
// subject was applied, skipped or is parked, with any number of competing
// consumers in a group, across crashes and redeliveries, on every broker.
// Batched(size, wait) and PerSubjectBatched(size, wait) process up to size
// deliveries in one inbox transaction (an inbox.Batcher such as sqlinbox),
// unordered or per subject; StrictBatched(size, wait) does so in strict
// order (an inbox.SequenceBatcher such as sqlinbox).
//
//	c, _ := consumer.New(b, consumer.Config{Mode: consumer.PerSubject(), Concurrency: 8, Inbox: in})
//	_ = c.Handle("ledger", "billing", ledger, consumer.WithMode(consumer.Strict()))
//	_ = c.Handle("clicks", "stats", stats, consumer.WithMode(consumer.Batched(64, 5*time.Millisecond)), consumer.WithConcurrency(2))
//
// Every route runs with the consumer's Config unless Handle's options
// (RouteOption) give it its own Mode, concurrency, in-flight bound,
// handler timeout, retry policy or dead-letter topic. The Config fields
// OrderedBySubject, StrictOrder, InboxBatch and InboxBatchWait still work
// and are deprecated: PerSubject, Strict, Batched and PerSubjectBatched
// replace them.
//
// A typed handler through a Router, in the inbox's transaction:
//
//	c, _ := consumer.New(b, consumer.Config{Concurrency: 8, Inbox: in})
//	r := consumer.NewRouter(reg)
//	consumer.On(r, "order.created", func(ctx context.Context, o OrderCreated, ev eventkit.Event) error {
//		tx, err := sqlinbox.Tx(ctx)
//		if err != nil {
//			return err
//		}
//		_, err = tx.ExecContext(ctx, "INSERT INTO invoices ...")
//		return err
//	})
//	_ = c.Handle("orders", "billing", r)
//	err := c.Run(ctx) // until ctx ends
//
// A handler error is retried with exponential backoff and jitter
// (RetryPolicy) up to MaxAttempts; RetryAfter(d, err) chooses the delay and
// eventkit.Permanent(err) dead-letters at once; a panic is recovered and
// treated as an error. Dead letters go to Config.DeadLetterTopic(topic)
// ("<topic>.dlq"; a route's own with WithDeadLetterTopic), readable with deadletter.InfoOf and replayable with Replay.
// Tracing, metrics and a graceful shutdown are options of Config.
//
// Limits: without an inbox the handler must be idempotent itself; in strict
// order a subject whose head event failed for good is parked, and its later
// events wait until an operator replays or skips the dead letter, and a
// group's first event of a subject must be number 1.
//
// Each guarantee and mode in detail (concurrency, the three order modes,
// retries, dead letters, replays, the inbox, shutdown): docs/design.md,
// section "Package consumer".
package consumer
