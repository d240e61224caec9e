package outbox

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
)

// DefaultTable is the outbox table name used when a store's config leaves it empty.
const DefaultTable = "eventkit_outbox"

var (
	// ErrInvalidTable is returned for a table name that is not a plain SQL
	// identifier (letters, digits, '_', optionally "schema.table").
	ErrInvalidTable = errors.New("outbox: invalid table name")
	// ErrNoTable is returned by Relay.Run (from Checker.Check) when the
	// outbox table does not exist: run the store's migrations.
	ErrNoTable = errors.New("outbox: table does not exist")
	// ErrTableShape is returned by Relay.Run (from Checker.Check) when the
	// outbox table lacks a column the relay needs (not an eventkit outbox
	// table, or one from an unknown version).
	ErrTableShape = errors.New("outbox: table is not an eventkit outbox table")
)

// Record is one outbox row: the event, the topic it goes to, and the
// relay's bookkeeping.
type Record struct {
	// Seq is the row's position in the outbox, assigned at insert time (not
	// at commit time). The relay publishes in Seq order.
	Seq   int64
	Topic string
	Event eventkit.Event
	// CreatedAt is when the row was inserted (database clock).
	CreatedAt time.Time
	// Attempts counts failed publish attempts that were recorded with Fail.
	Attempts int
	// LastError is the reason of the last recorded failure ("" if none).
	LastError string
	// DecodeErr is set (a *eventkit.DecodeError) when the stored row is
	// not a valid event (written by another tool): the relay parks it
	// without publishing it.
	DecodeErr error
}

// ClaimParams select the records a relay reads next.
type ClaimParams struct {
	// Limit is the most records to return (> 0).
	Limit int
	// ExcludeSubjects lists subjects to leave out (a subject whose head
	// event waits for a retry: the events behind it must wait too).
	ExcludeSubjects []string
	// ExcludeSeqs lists individual records to leave out.
	ExcludeSeqs []int64
	// AfterSeq, if > 0, returns only records with Seq > AfterSeq (the relay
	// uses it to read ahead while a batch is in flight, and checks for
	// earlier records before using what it read).
	AfterSeq int64
}

// FailParams record one failed publish attempt of one record.
type FailParams struct {
	Seq    int64
	Reason string
	// Park takes the record out of the stream for good (until an operator
	// requeues it): it is kept with the reason and never claimed again.
	Park bool
}

// Status is a snapshot of an outbox for operators (`eventkit outbox status`).
type Status struct {
	// Backlog is the number of events waiting to be published (not
	// delivered, not parked).
	Backlog int64
	// Oldest is the insert time of the oldest waiting event (zero if none),
	// OldestAge its age by the database clock.
	Oldest    time.Time
	OldestAge time.Duration
	// ByType counts waiting events per event type.
	ByType map[string]int64
	// Delivered counts delivered events still retained (retention mode).
	Delivered int64
	// ParkedCount counts parked events; Parked lists up to 100 of them,
	// oldest first, with their reasons.
	ParkedCount int64
	Parked      []ParkedEvent
}

// ParkedEvent is a parked record as listed by Status.
type ParkedEvent struct {
	Seq      int64
	Topic    string
	ID       string
	Type     string
	Subject  string
	Attempts int
	Reason   string
	ParkedAt time.Time
}

// MaxParkedListed is how many parked events Status lists.
const MaxParkedListed = 100

// Source is where a Relay's events come from, and where it records what
// became of them. A Store is a Source (the polling relay: Claim reads the
// table); outbox/pgcdc provides one that streams the table's inserts from a
// logical replication slot. The relay owns everything else: publishing,
// per-subject order, retries, parking, completion, metrics and leadership.
// All methods are safe for concurrent use.
type Source interface {
	// Claim returns up to p.Limit committed records that are neither
	// completed nor parked, in publish order (Seq order for a table, commit
	// order for a stream). It takes no locks: the relay that calls it holds
	// the leadership lock (see TryLock), and records stay claimable until
	// Complete or Fail(Park) removes them, so a record whose transaction
	// commits after records with higher Seq were published is simply
	// returned by a later Claim.
	Claim(ctx context.Context, p ClaimParams) ([]Record, error)
	// Complete marks records as published: deletes them, or, when keep is
	// true, marks them delivered (removed later by Cleanup). It returns how
	// many rows the database completed. A table store completes what is
	// there (a record completed by someone else is not counted); a stream
	// source completes a record only once the database has (its row may not
	// be visible yet when the stream hands it over), and only then lets its
	// position move past it.
	Complete(ctx context.Context, seqs []int64, keep bool) (int64, error)
	// Fail records a failed attempt (Attempts+1, LastError) and parks the
	// record if p.Park.
	Fail(ctx context.Context, p FailParams) error
	// Cleanup deletes delivered records delivered before deliveredBefore,
	// and, if parkedBefore is not zero, parked records parked before it.
	Cleanup(ctx context.Context, deliveredBefore, parkedBefore time.Time) (int64, error)
	// Status returns the backlog, the oldest event's age, per-type counts
	// and the parked events.
	Status(ctx context.Context) (Status, error)
	// Listen calls wake (which must not block) whenever events may have
	// been committed, until ctx ends; then it returns ctx.Err(). It
	// reconnects by itself on connection errors. See CommitNotifier.
	Listen(ctx context.Context, wake func()) error
	// TryLock tries once to take the outbox's leadership lock without
	// waiting. It returns (nil, nil) if another holder has it.
	TryLock(ctx context.Context) (Lock, error)
}

// Store is the database side of the outbox, implemented by outbox/pgoutbox,
// outbox/mysqloutbox and outbox/sqliteoutbox (and checked by outboxtest.Run): a Source
// that reads the table, plus what operators need.
type Store interface {
	Source
	// Requeue puts parked records back into the stream with Attempts 0.
	// It returns how many it requeued.
	Requeue(ctx context.Context, seqs []int64) (int64, error)
}

// Checker is implemented by sources that can check, before the relay
// starts, that their table (and stream) exist and have the shape they
// need. Relay.Run calls Check first and returns its error (wrapping
// ErrNoTable, ErrTableShape or a source's own) instead of retrying: a
// missing or foreign table is a configuration error, not an outage.
type Checker interface {
	Check(ctx context.Context) error
}

// StreamSource is implemented by sources whose Claim reads what a stream
// delivered into memory (outbox/pgcdc): the relay does not read ahead
// (Claim is cheap, and ClaimParams.AfterSeq has no meaning in commit order).
type StreamSource interface {
	Streams() bool
}

// RunCompleter is implemented by sources that can complete a run of
// consecutive records and, in the same statement, check what the relay
// would otherwise ask in a second round trip before publishing the batch it
// read ahead: whether a claimable record below before lies outside the run
// (a transaction that committed late, below the batch in flight). The relay
// uses it only for a clean batch whose seqs are exactly first..last and
// whose read-ahead starts at before; earlier is true if such a record
// exists (the relay then claims again instead of using its read-ahead). n
// is what Complete would return for the seqs first..last.
type RunCompleter interface {
	CompleteRun(ctx context.Context, first, last int64, keep bool, before int64) (n int64, earlier bool, err error)
}

// SourceError is implemented by a Lock whose loss is final: after Lost is
// closed, Err reports why the source cannot go on (e.g. its replication
// slot was dropped), and Relay.Run returns that error instead of standing
// by.
type SourceError interface {
	Err() error
}

// Lock is a held leadership lock (a Postgres advisory lock, a MySQL named
// lock, an in-process mutex for SQLite).
type Lock interface {
	// Lost is closed when the lock is known to be lost (its connection
	// died). The holder must stop publishing.
	Lost() <-chan struct{}
	// Release gives the lock up.
	Release(ctx context.Context) error
}

// CommitNotifier is implemented by stores whose Listen wakes only after
// commit (Postgres NOTIFY). Stores without it wake at Add time, before the
// commit, and the relay then polls quickly for a short while (see
// RelayConfig.WakeLinger).
type CommitNotifier interface {
	NotifiesOnCommit() bool
}

// Writer adds events to the outbox inside the caller's transaction of type
// TTx (pgx.Tx for outbox/pgoutbox, *sql.Tx for outbox/mysqloutbox and
// outbox/sqliteoutbox). The events become visible to the relay when the
// transaction commits, and vanish with it on rollback.
type Writer[TTx any] interface {
	Add(ctx context.Context, tx TTx, topic string, events ...eventkit.Event) error
}

// Migration is one embedded schema migration of a store.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// MigrationState says whether one migration has been applied.
type MigrationState struct {
	Version   int
	Name      string
	Applied   bool
	AppliedAt time.Time
}

// Migrator is implemented by every SQL store: it applies the store's embedded
// migrations and reports their state (`eventkit migrate up|status`).
type Migrator interface {
	Migrate(ctx context.Context) error
	MigrationStatuser
}

// MigrationStatuser reports which embedded migrations are applied.
type MigrationStatuser interface {
	MigrationStatus(ctx context.Context) ([]MigrationState, error)
}

// CheckRecord reports why r cannot be published as it stands, as a
// *eventkit.DecodeError naming the row, or nil: the topic must be a valid
// name (broker.ValidateName) and the event must pass eventkit.Event.Validate
// (at any size: size limits are the broker's). Sources set Record.DecodeErr
// from it, so that the relay parks such a row with the reason at once
// instead of offering it to the broker again and again.
func CheckRecord(r *Record) error {
	err := broker.ValidateName("topic", r.Topic)
	if err == nil {
		err = r.Event.Validate(math.MaxInt)
	}
	if err != nil {
		return &eventkit.DecodeError{Format: "outbox row", Raw: []byte(r.Event.ID), Err: fmt.Errorf("seq %d: %w", r.Seq, err)}
	}
	return nil
}
