package eventkittest_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/eventkittest"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// A user's handler credits an account in the inbox transaction. Their test
// calls eventkittest.Run(t, s); here each fault is run with RunFault to
// print the outcome.
func Example() {
	var evs []eventkit.Event
	for i := range 3 {
		evs = append(evs, eventkit.New("payment.received", "/shop", []byte(fmt.Sprintf(`{"cents":%d}`, 100*(i+1)))))
	}
	s := eventkittest.Scenario{
		Events: evs,
		Setup: func(ctx context.Context, db *sql.DB) error {
			_, err := db.ExecContext(ctx, `CREATE TABLE balance (cents INT NOT NULL); INSERT INTO balance VALUES (0)`)
			return err
		},
		Handler: func(*sql.DB) consumer.Handler {
			return consumer.HandlerFunc(func(ctx context.Context, ev eventkit.Event) error {
				var p struct{ Cents int }
				if err := eventkit.JSON.Unmarshal(ev.Data, &p); err != nil {
					return eventkit.Permanent(err)
				}
				tx, err := sqlinbox.Tx(ctx)
				if err != nil {
					return err
				}
				_, err = tx.ExecContext(ctx, `UPDATE balance SET cents = cents + ?`, p.Cents)
				return err
			})
		},
		Check: func(ctx context.Context, db *sql.DB, _ eventkittest.Result) error {
			var cents int
			if err := db.QueryRowContext(ctx, `SELECT cents FROM balance`).Scan(&cents); err != nil {
				return err
			}
			if cents != 600 {
				return fmt.Errorf("balance %d, want 600", cents)
			}
			return nil
		},
	}
	tb := &exampleTB{}
	defer tb.cleanup()
	for _, f := range eventkittest.DefaultFaults() {
		_, err := eventkittest.RunFault(tb, s, f)
		fmt.Println(f.Name, err == nil)
	}
	// Output:
	// NoFault true
	// DroppedAcks true
	// Duplicates true
	// ConcurrentDuplicates true
	// Reordered true
	// Delayed true
	// PublishFails true
	// Disconnect true
	// CrashBeforeCommit true
}

// exampleTB stands in for the *testing.T of a real test.
type exampleTB struct {
	dirs     []string
	cleanups []func()
}

func (*exampleTB) Helper() {}
func (e *exampleTB) TempDir() string {
	d, err := os.MkdirTemp("", "eventkittest-example-")
	if err != nil {
		panic(err)
	}
	e.dirs = append(e.dirs, d)
	return d
}
func (e *exampleTB) Cleanup(f func()) { e.cleanups = append(e.cleanups, f) }
func (*exampleTB) Fatal(args ...any)  { panic(fmt.Sprint(args...)) }
func (e *exampleTB) cleanup() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	for _, d := range e.dirs {
		_ = os.RemoveAll(d)
	}
}
