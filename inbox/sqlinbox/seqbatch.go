package sqlinbox

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/eventkit/eventkit/inbox"
)

// Strict order in batches (inbox.SequenceBatcher): one transaction locks
// the position rows of every subject of the batch, applies its events in
// order against positions kept in memory, advances the rows it moved and
// commits once. A failed handler stops the batch as ProcessBatch does on
// PostgreSQL: roll back, run the events before it again, commit those.

var (
	_ inbox.SequenceBatcher = (*Inbox)(nil)
	_ inbox.SequenceBatcher = (*PgxInbox)(nil)
)

// subjectKey names one position row.
type subjectKey struct{ consumer, topic, subject string }

func keyOf(p inbox.Position) subjectKey { return subjectKey{p.Consumer, p.Topic, p.Subject} }

func compareKeys(a, b subjectKey) int {
	return cmp.Or(cmp.Compare(a.consumer, b.consumer), cmp.Compare(a.topic, b.topic), cmp.Compare(a.subject, b.subject))
}

// posState is a locked position row as the batch moves it.
type posState struct {
	last, parked int64
	failures     int
	moved        bool
}

// errMissingRows is a run's report (MySQL) that position rows are missing:
// they are created outside the transaction and the run starts again.
type errMissingRows struct{ keys []subjectKey }

func (errMissingRows) Error() string { return "sqlinbox: position rows missing" }

// ProcessInOrderBatch implements inbox.SequenceBatcher.
func (s *sequencer) ProcessInOrderBatch(ctx context.Context, ps []inbox.Position, fn func(ctx context.Context, i, failures int) error) ([]error, error) {
	for _, p := range ps {
		if err := checkPosition(p); err != nil {
			return nil, err
		}
	}
	results := make([]error, len(ps))
	for n, created := len(ps), false; n > 0; {
		failed, ferr, err := s.seqRunOnce(ctx, ps[:n], results, fn)
		var missing errMissingRows
		if errors.As(err, &missing) && !created {
			for _, k := range missing.keys {
				p := inbox.Position{Consumer: k.consumer, Topic: k.topic, Subject: k.subject}
				if _, err := s.execDB(ctx, s.q.create, append(s.q.id(p), p.Consumer, p.Topic, p.Subject)...); err != nil {
					return nil, fmt.Errorf("sqlinbox: create position %s: %w", p, err)
				}
			}
			created = true
			continue
		}
		if err != nil {
			return nil, err
		}
		if failed < 0 {
			return results, nil
		}
		results[failed] = ferr
		for j := failed + 1; j < n; j++ {
			results[j] = inbox.ErrNotRun
		}
		n = failed
		if !anyFresh(results[:n]) { // nothing applied before it: nothing to commit
			return results, nil
		}
	}
	return results, nil
}

// seqRunOnce is one run of ProcessInOrderBatch in a new transaction: it
// sets results[i] for every position it gets through and commits if no fn
// failed (failed -1), or rolls back and returns the index of the failed fn
// and its error; err is a failure of the transaction itself (nothing
// committed). A panic in fn rolls back and propagates.
func (s *sequencer) seqRunOnce(ctx context.Context, ps []inbox.Position, results []error, fn func(ctx context.Context, i, failures int) error) (failed int, ferr, err error) {
	if err := ctx.Err(); err != nil {
		return -1, nil, err
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return -1, nil, fmt.Errorf("sqlinbox: begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			tx.rollback(ctx)
		}
	}()
	state, err := s.lockAll(ctx, tx, ps)
	if err != nil {
		return -1, nil, err
	}
	hctx := tx.handlerCtx(ctx)
	for i, p := range ps {
		st := state[keyOf(p)]
		switch {
		case p.Seq <= st.last:
			results[i] = inbox.ErrDuplicate
			continue
		case st.parked != 0 && p.Seq == st.parked:
			results[i] = inbox.ErrParked
			continue
		case p.Seq > st.last+1 || st.parked != 0:
			results[i] = &inbox.EarlyError{Position: p, Last: st.last, Parked: st.parked}
			continue
		}
		if err := ctx.Err(); err != nil {
			return -1, nil, err
		}
		if ferr := fn(hctx, i, st.failures); ferr != nil {
			return i, ferr, nil
		}
		st.last, st.failures, st.moved = p.Seq, 0, true
		results[i] = nil
	}
	if err := s.advanceAll(ctx, tx, state); err != nil {
		return -1, nil, err
	}
	if err := tx.commit(ctx); err != nil {
		return -1, nil, fmt.Errorf("sqlinbox: commit: %w", err)
	}
	committed = true
	return -1, nil, nil
}

// lockAll locks the position row of every subject of ps, in the order of
// (consumer, topic, subject) so that concurrent batches cannot deadlock on
// them, and returns their state.
func (s *sequencer) lockAll(ctx context.Context, tx seqTx, ps []inbox.Position) (map[subjectKey]*posState, error) {
	state := make(map[subjectKey]*posState, len(ps))
	var keys []subjectKey
	for _, p := range ps {
		k := keyOf(p)
		if _, ok := state[k]; !ok {
			state[k] = nil
			keys = append(keys, k)
		}
	}
	if s.q.lockAll != "" {
		return state, s.lockAllOnce(ctx, tx, keys, state)
	}
	slices.SortFunc(keys, compareKeys)
	var missing []subjectKey
	for _, k := range keys {
		p := inbox.Position{Consumer: k.consumer, Topic: k.topic, Subject: k.subject}
		st := &posState{}
		var err error
		if s.q.keyed {
			err = tx.queryRow(ctx, s.q.read, s.q.id(p)...).Scan(&st.last, &st.failures, &st.parked)
			if errors.Is(err, sql.ErrNoRows) {
				missing = append(missing, k)
				continue
			}
		} else {
			err = tx.queryRow(ctx, s.q.lock, s.q.id(p)...).Scan(&st.last, &st.failures, &st.parked)
		}
		if err != nil {
			return nil, fmt.Errorf("sqlinbox: lock position %s: %w", p, err)
		}
		state[k] = st
	}
	if len(missing) > 0 {
		return nil, errMissingRows{missing}
	}
	return state, nil
}

// lockAllOnce is lockAll in one statement (PostgreSQL).
func (s *sequencer) lockAllOnce(ctx context.Context, tx seqTx, keys []subjectKey, state map[subjectKey]*posState) error {
	type row struct {
		C string `json:"c"`
		T string `json:"t"`
		S string `json:"s"`
	}
	rows := make([]row, len(keys))
	for i, k := range keys {
		rows[i] = row{k.consumer, k.topic, k.subject}
	}
	arg, err := json.Marshal(rows)
	if err != nil {
		return fmt.Errorf("sqlinbox: lock positions: %w", err)
	}
	err = tx.query(ctx, s.q.lockAll, []any{string(arg)}, func(scan func(...any) error) error {
		var k subjectKey
		st := &posState{}
		if err := scan(&k.consumer, &k.topic, &k.subject, &st.last, &st.failures, &st.parked); err != nil {
			return err
		}
		if _, ok := state[k]; ok {
			state[k] = st
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlinbox: lock positions: %w", err)
	}
	for k, st := range state {
		if st == nil {
			return fmt.Errorf("sqlinbox: lock positions: no row returned for %s/%s/%q", k.consumer, k.topic, k.subject)
		}
	}
	return nil
}

// advanceAll writes the positions the batch moved.
func (s *sequencer) advanceAll(ctx context.Context, tx seqTx, state map[subjectKey]*posState) error {
	keys := make([]subjectKey, 0, len(state))
	for k, st := range state {
		if st.moved {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	slices.SortFunc(keys, compareKeys)
	if s.q.advanceAll != "" {
		type row struct {
			C string `json:"c"`
			T string `json:"t"`
			S string `json:"s"`
			Q int64  `json:"q"`
		}
		rows := make([]row, len(keys))
		for i, k := range keys {
			rows[i] = row{k.consumer, k.topic, k.subject, state[k].last}
		}
		arg, err := json.Marshal(rows)
		if err != nil {
			return fmt.Errorf("sqlinbox: advance positions: %w", err)
		}
		n, err := tx.exec(ctx, s.q.advanceAll, string(arg))
		if err == nil && n != int64(len(keys)) {
			err = fmt.Errorf("%d rows updated, want %d", n, len(keys))
		}
		if err != nil {
			return fmt.Errorf("sqlinbox: advance positions: %w", err)
		}
		return nil
	}
	for _, k := range keys {
		p := inbox.Position{Consumer: k.consumer, Topic: k.topic, Subject: k.subject, Seq: state[k].last}
		if _, err := tx.exec(ctx, s.q.advance, append([]any{p.Seq}, s.q.id(p)...)...); err != nil {
			return fmt.Errorf("sqlinbox: advance position %s: %w", p, err)
		}
	}
	return nil
}
