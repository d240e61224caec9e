package consumer_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// One consumer, two routes with settings of their own: the ledger applies
// each account's events strictly in subject-sequence order (Strict needs
// an inbox.Sequencer: sqlinbox, here on SQLite), although they were
// published out of order; the audit route keeps the Config's mode
// (Unordered) with a concurrency of its own.
func ExampleConsumer_Handle_strict() {
	dir, _ := os.MkdirTemp("", "strict")
	defer os.RemoveAll(dir)
	db, _ := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_txlock=immediate&_pragma=busy_timeout(5000)")
	defer db.Close()
	ctx := context.Background()
	in, _ := sqlinbox.New(db, sqlinbox.SQLite, sqlinbox.Options{})
	_ = in.Migrate(ctx) // processed events and subject positions

	b := memorybroker.New(memorybroker.Options{})
	defer b.Close(ctx)
	c, _ := consumer.New(b, consumer.Config{Inbox: in, Logger: quietLogger()})

	var mu sync.Mutex
	var ledger []string
	_ = c.HandleFunc("accounts", "ledger", func(ctx context.Context, ev eventkit.Event) error {
		mu.Lock()
		defer mu.Unlock()
		ledger = append(ledger, string(ev.Data))
		return nil
	}, consumer.WithMode(consumer.Strict()))
	_ = c.HandleFunc("accounts", "audit", func(ctx context.Context, ev eventkit.Event) error {
		return nil
	}, consumer.WithConcurrency(8))

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- c.Run(rctx) }()
	<-c.Ready()

	entry := func(seq, text string) eventkit.Event {
		return eventkit.New("ledger.entry", "text/plain", []byte(text),
			eventkit.WithSubject("acct-1"), eventkit.WithExtension(eventkit.SubjectSeqExtension, seq))
	}
	_ = b.Publish(ctx, "accounts", entry("3", "close"), entry("1", "open"), entry("2", "deposit"))
	for c.Stats().Handled < 6 { // 3 per route
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	fmt.Println("ledger:", strings.Join(ledger, ", "))
	// Output:
	// ledger: open, deposit, close
}
