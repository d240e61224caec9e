package sqliteoutbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // driver "sqlite"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/sqliteoutbox"
)

// Events join the caller's transaction: a committed transaction leaves its
// events in the outbox for the relay, a rolled-back one leaves nothing.
func ExampleStore_Add() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "sqlite-outbox-example")
	defer os.RemoveAll(dir)
	db, _ := sql.Open("sqlite", sqliteoutbox.DSN(filepath.Join(dir, "shop.db")))
	defer db.Close()
	db.SetMaxOpenConns(1) // SQLite has one writer at a time
	_, _ = db.ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY)`)

	store, _ := sqliteoutbox.New(db, sqliteoutbox.Config{Table: "shop_outbox"})
	if err := store.Migrate(ctx); err != nil {
		panic(err)
	}

	place := func(id string, commit bool) {
		tx, _ := db.BeginTx(ctx, nil)
		defer tx.Rollback() //nolint:errcheck // no-op after Commit
		_, _ = tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES (?)`, id)
		ev := eventkit.New("order.created", "application/json", []byte(`{"id":"`+id+`"}`), eventkit.WithSubject(id))
		if err := store.Add(ctx, tx, "orders", ev); err != nil {
			panic(err)
		}
		if commit {
			_ = tx.Commit()
		}
	}
	place("o-1", true)
	place("o-2", false) // rolled back: neither the order nor its event exists

	st, _ := store.Status(ctx)
	fmt.Println("waiting to be published:", st.Backlog, st.ByType)
	var orders int
	_ = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM orders`).Scan(&orders)
	fmt.Println("orders:", orders)
	// Output:
	// waiting to be published: 1 map[order.created:1]
	// orders: 1
}

// A store is an outbox.Writer for *sql.Tx, for code that is generic over the
// transaction type; Migrate applies the embedded migrations, and
// MigrationStatus lists them.
func ExampleStore_Migrate() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "sqlite-outbox-example")
	defer os.RemoveAll(dir)
	db, _ := sql.Open("sqlite", sqliteoutbox.DSN(filepath.Join(dir, "shop.db")))
	defer db.Close()

	store, _ := sqliteoutbox.New(db, sqliteoutbox.Config{})
	var _ outbox.Writer[*sql.Tx] = store
	if err := store.Migrate(ctx); err != nil {
		panic(err)
	}
	if err := store.Migrate(ctx); err != nil { // idempotent
		panic(err)
	}
	states, _ := store.MigrationStatus(ctx)
	all := true
	for _, m := range states {
		all = all && m.Applied
	}
	fmt.Println("first:", states[0].Version, states[0].Name)
	fmt.Println("all applied:", all)
	// Output:
	// first: 1 create_outbox
	// all applied: true
}
