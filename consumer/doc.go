// Package consumer is the consumer runtime: it runs handlers for the
// deliveries of any broker.Subscriber with a bounded worker pool, optional
// per-subject order (best effort, or strict across competing consumers and
// crashes with the SQL inbox), retries with backoff, dead letters, an optional inbox
// for idempotency, panic recovery, tracing and metrics, and a graceful
// shutdown.
//
//	c, _ := consumer.New(b, consumer.Config{Concurrency: 8, Inbox: in})
//	r := consumer.NewRouter(reg)
//	consumer.On(r, "order.created", func(ctx context.Context, o OrderCreated, ev eventkit.Event) error {
//		_, err := sqlinbox.Tx(ctx).ExecContext(ctx, "INSERT INTO invoices ...")
//		return err
//	})
//	_ = c.Handle("orders", "billing", r)
//	err := c.Run(ctx) // until ctx ends
//
// # Guarantees
//
// Delivery is at least once: a delivery is acked only after its handler
// succeeded (and, with an inbox, after the inbox transaction committed), or
// after its dead letter was published. With sqlinbox the effects of the
// handler's transaction happen once per (group, event id) even across
// crashes and concurrent duplicates; without an inbox the handler must be
// idempotent itself.
//
// Concurrency: each subscription has Config.Concurrency workers and at most
// Config.MaxInFlight unsettled deliveries (the broker stops fetching beyond
// that), so a slow or blocked handler applies backpressure; memory does not
// grow with the backlog.
//
// Order has three modes.
//
// Unordered (the default): deliveries run in parallel with no order.
//
// Best effort (OrderedBySubject): events of one subject run one at a time
// in delivery order and different subjects in parallel; a failing event is
// retried in place (its worker sleeps through the backoff, holding back
// later events of that subject only; where the broker can, broker.Extender,
// its ack wait is extended before each retry) and after Retry.MaxAttempts it is
// dead-lettered and the subject moves on. The order is the broker's
// delivery order in this process: competing consumers of a group can run
// one subject's events in parallel, and a delivery redelivered after its
// ack wait (or a consumer's crash) comes back after later events of its
// subject.
//
// Strict (StrictOrder, with an inbox.Sequencer such as sqlinbox): each
// event of a subject is applied only after every earlier event of that
// subject was applied, skipped or is parked, with any number of competing
// consumers in a group, across crashes and redeliveries, on every broker.
// The order is the subject sequence (eventkit.SubjectSeqExtension) that
// the SQL outbox stores stamp in the producer's transaction, gap-free in
// commit order. The inbox keeps a position row per (group, topic, subject)
// and locks it in the handler's transaction: an event whose number is
// already applied is a duplicate (acked); the next number runs, and the
// position advances in the same commit as the handler's writes; a later
// number is early: it waits in this process, unsettled, holding its
// in-flight slot but no worker (so at most MaxInFlight wait, and other
// subjects and events keep flowing), and runs as soon as its subject
// reaches it: at once when its predecessor is applied here, or on a recheck
// of the inbox (Retry.Initial doubling while the subject does not move, at
// most a second apart) when another consumer applies it. Waiting is not an
// attempt. An early event goes back to the broker (Stats.EarlyReturned,
// with a delay doubling per delivery up to Retry.Max, at least 5 s) when
// the window is full of early events (the one farthest from its subject's
// next number: nothing else could arrive), when its subject did not move
// for 2 s while nothing arrived, after half the ack wait, or when its
// subject is parked.
// MaxAttempts counts the failures of a subject's head event, kept in the
// position row, not broker redeliveries. When the head fails for the last
// time (or permanently) the subject is parked: the head is dead-lettered
// (marked ExtDLQParked) and the subject's later events wait (they are
// redelivered at most every Retry.Max) until an operator replays the dead letter
// (eventkit dlq replay, or deadletter.Store.Unpark then Replay: it runs
// first again, with a fresh count of attempts) or skips it (eventkit dlq
// skip, deadletter.Store.Skip: the subject moves past it). Deduplication
// is by (group, topic, subject, sequence number): a replayed event whose
// subject was skipped past it is a duplicate. A group's first event of a
// subject must be number 1: a group started after earlier events of a
// subject are gone waits for them (start a group before the events it must
// apply; there is no call yet to set a position by hand).
// Events without a subject or without a sequence number get best-effort
// order and the inbox's deduplication by event id. An event whose
// sequence number is not a positive integer is dead-lettered.
//
// Subscription settings: Config.AckWait (default HandlerTimeout + 30s, in
// every mode) and Config.GroupMaxInFlight (the group's unacked limit on the
// server, NATS MaxAckPending) reach the broker per subscription. Ready is
// closed once every handler is subscribed, for tests and readiness checks.
//
// Retries: a handler error is retried with exponential backoff and jitter
// (RetryPolicy) up to MaxAttempts, counting with Delivery.Attempt(); without
// OrderedBySubject a retry is a Nack with the delay, so it survives a restart.
// RetryAfter(d, err) chooses the delay; eventkit.Permanent(err) (or a payload
// the registry cannot decode) dead-letters at once. A panic is recovered,
// logged with its stack, and treated as an error.
//
// Dead letters: the original event, with an id of its own and dlq*
// extensions (original id, topic, group, attempts, first and last failure
// time, error text, reason) is published to Config.DeadLetterTopic(topic),
// "<topic>.dlq" by default, and only then is the delivery acked. Its own id
// keeps a broker's deduplication by message id (JetStream's Nats-Msg-Id
// window) from dropping the second group's dead letter of an event. Before
// it subscribes, Run provisions each dead-letter topic with
// Config.DeadLetterGroup (the collector's group) on the dead-letter
// publisher (broker.Provisioner), so no dead letter is unroutable (RabbitMQ)
// or missed before the collector first ran. If the publish fails, every
// try is logged as an error and counted (OutcomeDeadLetterFailed,
// Stats.DeadLetterFailed); it is tried 3 times in place with backoff (once,
// if the broker rejects the dead letter itself, e.g. over its size limit),
// then the delivery is nacked with Retry.Max as its delay: the worker (and
// the subject) is released, and the event comes back later, is handled once
// more and, if it fails again, dead-lettered again. The delivery is never
// acked or termed without its dead letter accepted by the broker (unless
// DeadLetterTopic returns "", which drops it on purpose). A message that is
// not a valid event is dead-lettered at once as an event of type
// UndecodableType whose data is the raw bytes. A Router dead-letters an
// event type it has no route for at once with ReasonNoRoute
// (Router.IgnoreUnrouted skips such types instead). Read the attributes
// back with DeadLetterInfo; Original gives the original event back.
//
// Replays: Replay (what deadletter.Store.Replay and `eventkit dlq replay`
// publish) is the original event with an id of its own, addressed to the
// group that gave up (ExtReplayGroup): that group's routes hand the
// handler and the inbox the event with its original id, so an inbox drops
// a replay of an event applied meanwhile as a duplicate; every other group
// of the topic acks the replay without handling it.
//
// Batch mode (Config.InboxBatch > 1, unordered subscriptions only, with an
// inbox that implements inbox.Batcher such as sqlinbox): a worker takes the
// deliveries that are ready, up to InboxBatch (waiting InboxBatchWait at
// most for more), sorts them by event id, and runs them in ONE database
// transaction: the inbox keys are inserted (a conflict, also with an
// earlier copy in the same batch, makes an event a duplicate), then per
// event a SAVEPOINT and the handler, under its own HandlerTimeout; a
// handler error rolls back to the savepoint, key included, so that event
// alone fails and follows the retry and dead-letter policy while the others
// stay in the batch. Then one COMMIT,
// and only after it the acks. The guarantee is the same as without
// batching: each event's effects in the transaction happen once per
// (group, event id), across crashes (a crash before the commit loses the
// whole batch and every member is redelivered; one between commit and acks
// makes every redelivery a skipped duplicate) and concurrent duplicates. If
// the transaction fails as a whole (COMMIT error such as a deferred
// constraint, a lost connection, a statement error that aborts the
// transaction on MySQL), nothing of it happened and each member is
// processed again at once in its own transaction, so one bad event cannot
// fail its neighbours. What batching changes: handlers of one batch run one
// after the other, their writes share one transaction (locks are held
// until the batch commits, so a concurrent duplicate waits longer), and a
// delivery waits for its whole batch before it is acked; keep AckWait
// above InboxBatch times the usual handler time (a redelivery in between is
// harmless, it is skipped as a duplicate). Handlers must not rely on
// running alone in their transaction (no COMMIT, no SET TRANSACTION).
// Keep InboxBatch at 64 or fewer on PostgreSQL, and the database pool
// (sql.DB.SetMaxOpenConns) near what the database's cores can run: with
// batching, more workers mean more open transactions, not more commits.
//
// Shutdown: when Run's context ends, fetching stops, deliveries not yet
// started are nacked, handler calls in progress get Config.ShutdownTimeout
// to finish (then their contexts are cancelled and the deliveries nacked),
// and Run returns after every delivery is settled and every goroutine it
// started has ended.
//
// Observability: log/slog (Config.Logger); an OpenTelemetry span "handle
// <topic>" per attempt, child of the producer's span when the event carries
// a traceparent extension (W3C trace context), so trace.SpanFromContext in
// the handler continues the trace; Metrics (NewOTelMetrics, or your own) for
// outcomes (handled, failed, retried, dead_lettered, duplicate) and handler
// latency; Consumer.Stats for in-process counters.
package consumer
