package sqlinbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// The handler's writes and the inbox record commit together; a redelivery
// is a duplicate. The write itself is a compare-and-swap on a version
// column, so a decision made on a stale read cannot be applied.
func Example() {
	dir, _ := os.MkdirTemp("", "inbox")
	defer os.RemoveAll(dir)
	db, _ := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_txlock=immediate&_pragma=busy_timeout(5000)")
	defer db.Close()
	ctx := context.Background()
	_ = sqlinbox.Migrate(ctx, db, sqlinbox.SQLite) // creates processed_events
	_, _ = db.Exec(`CREATE TABLE accounts (id TEXT PRIMARY KEY, balance INTEGER, version INTEGER)`)
	_, _ = db.Exec(`INSERT INTO accounts VALUES ('a-1', 100, 1)`)

	in, _ := sqlinbox.New(db, sqlinbox.SQLite, sqlinbox.Options{})
	debit := func(ctx context.Context) error {
		tx, err := sqlinbox.Tx(ctx) // the inbox's transaction
		if err != nil {
			return err
		}
		var balance, version int
		if err := tx.QueryRowContext(ctx, `SELECT balance, version FROM accounts WHERE id = 'a-1'`).Scan(&balance, &version); err != nil {
			return err
		}
		return sqlinbox.CompareAndSwap(ctx, tx,
			`UPDATE accounts SET balance = ?, version = version + 1 WHERE id = 'a-1' AND version = ?`, balance-30, version)
	}
	key := inbox.Key{Consumer: "payments", EventID: "evt-42", EventType: "payment.requested"}
	for range 3 { // the same event delivered three times
		err := in.Process(ctx, key, debit)
		fmt.Println("process:", err, errors.Is(err, inbox.ErrDuplicate))
	}
	var balance int
	_ = db.QueryRow(`SELECT balance FROM accounts WHERE id = 'a-1'`).Scan(&balance)
	fmt.Println("balance:", balance)
	// Output:
	// process: <nil> false
	// process: inbox: event already processed true
	// process: inbox: event already processed true
	// balance: 70
}

func ExampleUpsertSQL() {
	q, _ := sqlinbox.UpsertSQL(sqlinbox.Postgres, "stock", []string{"sku"}, []string{"sku", "qty"})
	fmt.Println(q)
	q, _ = sqlinbox.UpsertSQL(sqlinbox.MySQL, "stock", []string{"sku"}, []string{"sku", "qty"})
	fmt.Println(q)
	// Output:
	// INSERT INTO stock (sku, qty) VALUES ($1, $2) ON CONFLICT (sku) DO UPDATE SET qty = EXCLUDED.qty
	// INSERT INTO stock (sku, qty) VALUES (?, ?) ON DUPLICATE KEY UPDATE qty = VALUES(qty)
}

// ProcessBatch runs several events in one transaction: each event's writes
// and key commit with the batch, a failed handler loses only its own, and
// a key seen before is a duplicate. The consumer uses it in batch mode
// (consumer.Batched).
func ExampleInbox_ProcessBatch() {
	dir, _ := os.MkdirTemp("", "inbox")
	defer os.RemoveAll(dir)
	db, _ := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_txlock=immediate&_pragma=busy_timeout(5000)")
	defer db.Close()
	ctx := context.Background()
	_ = sqlinbox.Migrate(ctx, db, sqlinbox.SQLite)
	_, _ = db.Exec(`CREATE TABLE credits (event_id TEXT PRIMARY KEY)`)
	in, _ := sqlinbox.New(db, sqlinbox.SQLite, sqlinbox.Options{})

	keys := []inbox.Key{{Consumer: "ledger", EventID: "e1"}, {Consumer: "ledger", EventID: "e2"}, {Consumer: "ledger", EventID: "e1"}}
	results, err := in.ProcessBatch(ctx, keys, func(ctx context.Context, i int) error {
		if keys[i].EventID == "e2" {
			return errors.New("e2 fails") // rolled back alone; retried later
		}
		tx, err := sqlinbox.Tx(ctx)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO credits VALUES (?)`, keys[i].EventID)
		return err
	})
	fmt.Println(err)
	for i, r := range results {
		fmt.Println(keys[i].EventID, r)
	}
	var n int
	_ = db.QueryRow(`SELECT COUNT(*) FROM credits`).Scan(&n)
	fmt.Println("credits:", n)
	// Output:
	// <nil>
	// e1 <nil>
	// e2 e2 fails
	// e1 inbox: event already processed
	// credits: 1
}
