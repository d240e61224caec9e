package consumer

import (
	"fmt"
	"strings"
	"time"
)

// Mode is how a subscription runs its deliveries: in which order, and one
// per inbox transaction or in batches. Build one with Unordered,
// PerSubject, Strict, Batched or PerSubjectBatched and set it as
// Config.Mode (every route of the consumer) or pass it to Handle with
// WithMode (one route). The zero Mode is Unordered.
//
// Modes are comparable with ==.
type Mode struct {
	order   orderKind
	batched bool
	size    int
	wait    time.Duration
}

type orderKind uint8

const (
	orderNone orderKind = iota
	orderSubject
	orderStrict
)

// defaultBatchWait is the default of a batched Mode's wait.
const defaultBatchWait = 2 * time.Millisecond

// Unordered runs deliveries in parallel on Config.Concurrency workers, in
// no order, one per inbox transaction. It is the zero Mode and the default.
func Unordered() Mode { return Mode{} }

// PerSubject is best-effort per-subject order: events with the same
// subject run one at a time, in delivery order, while different subjects
// run in parallel. A failed event is retried in place (its worker sleeps
// through the backoff) so later events of its subject cannot overtake it;
// after the last attempt it is dead-lettered and the subject moves on.
// Events without a subject share one key (they are ordered among
// themselves). The order is the broker's delivery order in this process:
// see "Order" in the package doc for what competing consumers and
// redeliveries do to it. It replaces Config.OrderedBySubject.
func PerSubject() Mode { return Mode{order: orderSubject} }

// Strict applies the events of each subject strictly in the order of their
// subject sequence numbers (eventkit.SubjectSeqExtension, stamped by the
// SQL outbox stores), with any number of competing consumers, across
// crashes and redeliveries; see "Strict order" in docs/design.md. It needs
// a Config.Inbox that implements inbox.Sequencer (sqlinbox); New or Handle
// fails without one. It replaces Config.StrictOrder.
func Strict() Mode { return Mode{order: orderStrict} }

// Batched is unordered batch mode: a worker takes up to size deliveries
// that are ready (waiting at most wait for more after the first; 0 means
// the default, 2ms; it never waits when the batch is full) and processes
// them in one inbox transaction, with one commit for all (see
// inbox.Batcher). Config.Inbox must implement inbox.Batcher (sqlinbox
// does). A handler error fails only its own event, which is retried or
// dead-lettered as usual; the others are acked after the commit (on
// PostgreSQL the events before it run a second time, the ones after it in
// the next batch). If the transaction fails as a whole (commit error, lost
// connection), nothing of it happened and each of its events is processed
// again at once, alone. A size below 2 is refused by New and Handle with a
// *ModeError. It replaces Config.InboxBatch and Config.InboxBatchWait.
func Batched(size int, wait time.Duration) Mode {
	return Mode{batched: true, size: size, wait: wait}
}

// PerSubjectBatched is PerSubject in batches (see Batched): a batch takes
// the waiting events of several subjects, each subject's in order. A
// failed event is retried in place before the later events of its
// subject, which the other subjects of its batch wait for. It replaces
// Config.OrderedBySubject with Config.InboxBatch.
func PerSubjectBatched(size int, wait time.Duration) Mode {
	return Mode{order: orderSubject, batched: true, size: size, wait: wait}
}

// StrictBatched is Strict in batches (see Batched): a batch takes the
// waiting events of several subjects and one inbox.SequenceBatcher
// transaction (sqlinbox) applies each subject's events in sequence order,
// with one commit for all. An event that is early, a duplicate or its
// parked subject's head is settled as Strict settles it; a failed head is
// counted and retried in place, alone, before the later events of its
// subject (on PostgreSQL the events before it in the batch run a second
// time, as with Batched). Config.Inbox must implement
// inbox.SequenceBatcher; a size below 2 is refused with a *ModeError.
func StrictBatched(size int, wait time.Duration) Mode {
	return Mode{order: orderStrict, batched: true, size: size, wait: wait}
}

// String names the Mode for logs: "unordered", "per-subject", "strict",
// "batched(64, 2ms)", "per-subject-batched(64, 2ms)",
// "strict-batched(64, 2ms)".
func (m Mode) String() string {
	var name string
	switch m.order {
	case orderSubject:
		name = "per-subject"
	case orderStrict:
		name = "strict"
	default:
		name = "unordered"
	}
	if !m.batched {
		return name
	}
	if m.order == orderNone {
		name = "batched"
	} else {
		name += "-batched"
	}
	return fmt.Sprintf("%s(%d, %s)", name, m.size, m.wait)
}

// Batch returns the batch size and wait of Batched, PerSubjectBatched and
// StrictBatched
// (the wait as given: 0 means the default), and 0, 0 for the other modes.
func (m Mode) Batch() (size int, wait time.Duration) {
	if !m.batched {
		return 0, 0
	}
	return m.size, m.wait
}

// ordered reports whether events of a subject run one at a time
// (PerSubject, PerSubjectBatched, Strict, StrictBatched).
func (m Mode) ordered() bool { return m.order != orderNone }

// strict reports whether m is Strict or StrictBatched.
func (m Mode) strict() bool { return m.order == orderStrict }

// batch is the most deliveries per inbox transaction: 1 unless batched.
func (m Mode) batch() int {
	if !m.batched {
		return 1
	}
	return m.size
}

// withDefaults validates m and fills in the default batch wait.
func (m Mode) withDefaults() (Mode, error) {
	if !m.batched {
		return m, nil
	}
	if m.size < 2 {
		return m, &ModeError{Mode: m, Reason: fmt.Sprintf("batch size %d: must be at least 2 (Unordered and PerSubject take one event per transaction)", m.size)}
	}
	if m.wait <= 0 {
		m.wait = defaultBatchWait
	}
	return m, nil
}

// ModeError is the error of New and Handle for a Mode that cannot run: a
// batch size below 2, or a Config.Mode set together with the deprecated
// fields it replaces.
type ModeError struct {
	Mode   Mode
	Reason string
}

func (e *ModeError) Error() string { return "consumer: mode " + e.Mode.String() + ": " + e.Reason }

// normalizeMode sets c.Mode from the deprecated fields when c.Mode is zero,
// and clears those fields, so that the rest of the package reads only
// c.Mode. A non-zero Mode with any of them set is a *ModeError.
func (c Config) normalizeMode() (Config, error) {
	var flat []string
	if c.OrderedBySubject {
		flat = append(flat, "OrderedBySubject")
	}
	if c.StrictOrder {
		flat = append(flat, "StrictOrder")
	}
	if c.InboxBatch > 1 {
		flat = append(flat, "InboxBatch")
	}
	if c.InboxBatchWait > 0 {
		flat = append(flat, "InboxBatchWait")
	}
	if c.Mode != (Mode{}) {
		if len(flat) > 0 {
			return c, &ModeError{Mode: c.Mode, Reason: "Config.Mode cannot be combined with the deprecated " +
				strings.Join(flat, ", ") + " (Mode replaces them)"}
		}
		return c, nil
	}
	m := Mode{}
	switch {
	case c.StrictOrder && c.InboxBatch > 1:
		m = StrictBatched(c.InboxBatch, c.InboxBatchWait)
	case c.StrictOrder:
		m = Strict()
	case c.OrderedBySubject && c.InboxBatch > 1:
		m = PerSubjectBatched(c.InboxBatch, c.InboxBatchWait)
	case c.OrderedBySubject:
		m = PerSubject()
	case c.InboxBatch > 1:
		m = Batched(c.InboxBatch, c.InboxBatchWait)
	}
	c.Mode = m
	c.OrderedBySubject, c.StrictOrder, c.InboxBatch, c.InboxBatchWait = false, false, 0, 0
	return c, nil
}
