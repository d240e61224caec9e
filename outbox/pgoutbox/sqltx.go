package pgoutbox

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/internal/sqlutil"
)

var _ outbox.Writer[*sql.Tx] = SQLWriter{}

// SQLWriter adds events to the store's outbox inside a database/sql
// transaction on the same database (opened with pgx's stdlib driver, e.g.
// stdlib.OpenDBFromPool, or lib/pq), for code that uses database/sql rather
// than pgx. It behaves exactly like Store.Add.
type SQLWriter struct{ s *Store }

// SQL returns the store's database/sql writer.
func (s *Store) SQL() SQLWriter { return SQLWriter{s} }

// Add inserts events for topic inside tx; see Store.Add.
func (w SQLWriter) Add(ctx context.Context, tx *sql.Tx, topic string, events ...eventkit.Event) error {
	if len(events) == 0 {
		return nil
	}
	args, err := w.s.insertArgs(ctx, topic, events, func(subject string, n int64) (last int64, err error) {
		err = tx.QueryRowContext(ctx, w.s.q.reserveSeq, topic, subject, n).Scan(&last)
		return last, err
	})
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, w.s.q.insert, args...); err != nil {
		return fmt.Errorf("outbox/pgoutbox: insert into %s: %w", w.s.table, err)
	}
	return nil
}

// insertArgs validates events, stamps their subject sequence numbers
// (reserve runs in the caller's transaction) and returns the arguments of
// the insert statement: one array per column.
func (s *Store) insertArgs(ctx context.Context, topic string, events []eventkit.Event, reserve func(subject string, n int64) (int64, error)) ([]any, error) {
	evs, err := outbox.Prepare(ctx, topic, s.cfg.MaxEventSize, events)
	if err != nil {
		return nil, err
	}
	evs, err = sqlutil.StampSubjectSeq(evs, func(subject string, n int64) (int64, error) {
		last, err := reserve(subject, n)
		if err != nil {
			return 0, fmt.Errorf("outbox/pgoutbox: subject sequence: %w", err)
		}
		return last, nil
	})
	if err != nil {
		return nil, err
	}
	n := len(evs)
	ids, types, sources, subjects, times := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	dvs, dcts, dss := make([]string, n), make([]string, n), make([]string, n)
	exts := make([]*string, n)
	datas := make([][]byte, n)
	for i, e := range evs {
		ids[i], types[i], sources[i], subjects[i], times[i] = e.ID, e.Type, e.Source, e.Subject, sqlutil.TimeText(e.Time)
		dvs[i], dcts[i], dss[i] = e.DataVersion, e.DataContentType, e.DataSchema
		exts[i] = sqlutil.ExtText(e.Extensions)
		datas[i] = e.Data
	}
	return []any{topic, ids, types, sources, subjects, times, dvs, dcts, dss, exts, datas}, nil
}
