package inbox

import (
	"context"
	"errors"
	"fmt"
)

var (
	// ErrEarly is matched (errors.Is) by the *EarlyError that
	// Sequencer.ProcessInOrder returns for an event whose predecessors in
	// its subject's sequence have not all been applied yet: the caller
	// should put it back for later; it is not a failure of the event.
	ErrEarly = errors.New("inbox: an earlier event of the subject is not applied yet")
	// ErrParked is returned by Sequencer.ProcessInOrder for the event its
	// subject is parked at (dead-lettered after its attempts, waiting for
	// an operator to replay or skip it): the caller acks it.
	ErrParked = errors.New("inbox: the subject is parked at this event")
	// ErrNotParked is returned by the operator calls (Skip, Unpark) when
	// the subject is not parked at the given event.
	ErrNotParked = errors.New("inbox: the subject is not parked at this event")
)

// Position names one event's place in its subject's sequence, for one
// consumer (group).
type Position struct {
	Consumer string
	Topic    string
	Subject  string
	// Seq is the event's number in its subject's sequence (from 1, see
	// eventkit.SubjectSeqExtension).
	Seq int64
}

func (p Position) String() string {
	return fmt.Sprintf("%s/%s/%q#%d", p.Consumer, p.Topic, p.Subject, p.Seq)
}

// EarlyError says why an event cannot run yet: its subject's last applied
// event is Last (< Seq-1), and, when Parked is not 0, the subject is parked
// at event Parked until an operator acts.
type EarlyError struct {
	Position Position
	Last     int64
	Parked   int64
}

func (e *EarlyError) Error() string {
	if e.Parked != 0 {
		return fmt.Sprintf("inbox: %s waits: subject parked at %d", e.Position, e.Parked)
	}
	return fmt.Sprintf("inbox: %s waits: last applied is %d", e.Position, e.Last)
}

// Is makes errors.Is(err, ErrEarly) true.
func (e *EarlyError) Is(target error) bool { return target == ErrEarly }

// Sequencer is implemented by inboxes that apply each subject's events in
// sequence order (sqlinbox): a position row per (consumer, topic, subject)
// holds the last applied number, the failed attempts of the next one (the
// head) and whether the subject is parked. The consumer's strict order mode
// uses it.
type Sequencer interface {
	// ProcessInOrder runs fn in the inbox's transaction if p.Seq is the
	// subject's next number, and then advances the position to p.Seq in
	// that transaction and commits. It reads the position under a row lock
	// (so copies of one event, and events of one subject, run one at a time
	// across processes) and returns, without calling fn:
	//   - ErrDuplicate if p.Seq was applied already (or skipped);
	//   - ErrParked if the subject is parked at p.Seq;
	//   - an *EarlyError (errors.Is ErrEarly) if an earlier number is not
	//     applied yet.
	// fn gets the number of failed attempts recorded for this head so far.
	// When fn fails, everything of the transaction is rolled back and fn's
	// error returned; record the failure with RecordFailure.
	ProcessInOrder(ctx context.Context, p Position, fn func(ctx context.Context, failures int) error) error
	// RecordFailure counts one failed attempt of the head p, with reason,
	// and returns the failures recorded for it. It returns 0 and no error
	// if p is no longer the head (another copy applied it meanwhile).
	RecordFailure(ctx context.Context, p Position, reason string) (int, error)
	// Park parks the subject at its head p: until Skip or Unpark, later
	// events of the subject get an *EarlyError with Parked = p.Seq, and p
	// itself ErrParked. It is a no-op if p is no longer the head.
	Park(ctx context.Context, p Position, reason string) error
	// Skip resumes a subject parked at p as if p had been applied: the
	// position moves to p.Seq and the next event runs. ErrNotParked if the
	// subject is not parked at p.Seq.
	Skip(ctx context.Context, p Position) error
	// Unpark resumes a subject parked at p with p still the head, its
	// failure count reset, so that p, published again (a replay), runs
	// first. ErrNotParked if the subject is not parked at p.Seq.
	Unpark(ctx context.Context, p Position) error
}

// SequenceBatcher is implemented by Sequencers that apply the events of
// several subjects in one transaction (sqlinbox), so that one commit serves
// many events. The consumer's StrictBatched mode uses it.
type SequenceBatcher interface {
	Sequencer
	// ProcessInOrderBatch processes ps in order in one transaction and
	// commits once. It locks the position row of every subject of the
	// batch first (creating it if needed), in one order across batches,
	// and then goes through ps as ProcessInOrder would, one after the
	// other, with the positions as they stand after the events before:
	// results[i] is ErrDuplicate, ErrParked or an *EarlyError without fn
	// being called, or fn(ctx, i, failures) runs in the transaction
	// (failures: the failed attempts recorded for the head, 0 for an
	// event after the first applied of its subject) and, if it returns
	// nil, the subject's position advances to ps[i].Seq in the same
	// transaction and results[i] is nil.
	//
	// When fn(i) fails, it stops there: it rolls the transaction back,
	// runs ps[:i] again in a new one (their handlers run a second time;
	// only the committed run's writes remain), gives every later position
	// ErrNotRun, and results[i] is fn's error (nothing recorded for it: use
	// RecordFailure). When err is not nil nothing of the batch was
	// committed and results is nil.
	ProcessInOrderBatch(ctx context.Context, ps []Position, fn func(ctx context.Context, i, failures int) error) (results []error, err error)
}
