package sqldeadletter

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/inbox"
)

// Sequenced dead letters (consumer.Strict): a dead letter
// marked deadletter.ExtParked parked its subject for its group; the
// subject's later events wait until an operator either replays it (Unpark,
// then Replay: it runs again first, with a fresh count of attempts) or
// skips it (Skip: the subject moves past it, and the dead letter stays in
// the table for the record). Other subjects are not held.

// Parked returns the subject position that e parked, and false when e did
// not park one (best-effort order, or undecodable).
func (e Entry) Parked() (inbox.Position, bool) {
	v, ok := e.Event.Extensions[deadletter.ExtParked]
	if !ok || e.Event.Subject == "" {
		return inbox.Position{}, false
	}
	seq, err := strconv.ParseInt(v, 10, 64)
	if err != nil || seq <= 0 {
		return inbox.Position{}, false
	}
	if s, ok, err := eventkit.SubjectSeq(e.Event); !ok || err != nil || s != seq {
		return inbox.Position{}, false
	}
	return inbox.Position{Consumer: e.Group, Topic: e.Topic, Subject: e.Event.Subject, Seq: seq}, true
}

// Unpark makes every subject parked by the dead letters f selects run its
// parked event first again (with its failure count reset), so that a
// Replay of those dead letters resumes the subjects in order: call it
// right before Replay, with the inbox (on the consumer group's database)
// the consumers use. A subject that is no longer parked there (unparked or
// skipped already) is left alone. It returns how many subjects it
// unparked. If the replay then fails, the subjects wait for the replay to
// be tried again.
func (s *Store) Unpark(ctx context.Context, seq inbox.Sequencer, f Filter) (int, error) {
	return s.resume(ctx, f, "unpark", seq.Unpark)
}

// Skip resumes every subject parked by the dead letters f selects without
// running the parked event: the subject's next events are applied as if it
// had been. The dead letters stay in the table (purge them when done). It
// returns how many subjects it resumed; one no longer parked there is left
// alone.
func (s *Store) Skip(ctx context.Context, seq inbox.Sequencer, f Filter) (int, error) {
	return s.resume(ctx, f, "skip", seq.Skip)
}

func (s *Store) resume(ctx context.Context, f Filter, op string, fn func(context.Context, inbox.Position) error) (int, error) {
	entries, err := s.List(ctx, f)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		p, ok := e.Parked()
		if !ok {
			continue
		}
		switch err := fn(ctx, p); {
		case errors.Is(err, inbox.ErrNotParked):
		case err != nil:
			return n, fmt.Errorf("deadletter: %s %s: %w", op, e.EventID, err)
		default:
			n++
		}
	}
	return n, nil
}
