package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// conn holds the connection flags shared by commands.
type conn struct {
	g           *globals
	store       string
	broker      string
	outboxTable string
	inboxTable  string
	dlqTable    string
	// create lets openStore create a SQLite file that does not exist
	// (migrate up, relay, bench); every other command refuses to.
	create bool
}

func (c *conn) storeFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	envFlag(f, &c.store, "store", "EVENTKIT_STORE", "", "database URL: "+connect.StoreSchemes)
	envFlag(f, &c.outboxTable, "outbox-table", "EVENTKIT_OUTBOX_TABLE", "", "outbox table (default eventkit_outbox)")
	envFlag(f, &c.inboxTable, "inbox-table", "EVENTKIT_INBOX_TABLE", "", "inbox table (default processed_events)")
	envFlag(f, &c.dlqTable, "dlq-table", "EVENTKIT_DLQ_TABLE", "", "dead-letter table (default eventkit_dead_letters)")
}

func (c *conn) brokerFlag(cmd *cobra.Command) {
	envFlag(cmd.Flags(), &c.broker, "broker", "EVENTKIT_BROKER", "", "broker URL: "+connect.BrokerSchemes)
}

func (c *conn) openStore(ctx context.Context) (*connect.Store, error) {
	if c.store == "" {
		return nil, errors.New("--store is required (or set EVENTKIT_STORE)")
	}
	opts := []connect.Option{connect.WithOutboxTable(c.outboxTable)}
	if !c.create {
		opts = append(opts, connect.MustExist())
	}
	return connect.OpenStore(ctx, c.store, opts...)
}

func (c *conn) openBroker(ctx context.Context) (broker.Broker, error) {
	if c.broker == "" {
		return nil, errors.New("--broker is required (or set EVENTKIT_BROKER)")
	}
	return connect.Broker(ctx, c.broker, connect.WithLogger(c.g.logger()))
}

func (c *conn) inbox(st *connect.Store) (*sqlinbox.Inbox, error) {
	return sqlinbox.New(st.SQL, st.Dialect, sqlinbox.Options{Table: c.inboxTable})
}

func (c *conn) deadLetters(st *connect.Store) (*sqldeadletter.Store, error) {
	return sqldeadletter.New(st.SQL, st.Dialect, c.dlqTable)
}

// openDeadLetters opens the store and its dead-letter table; call the
// returned function to close the store.
func (c *conn) openDeadLetters(ctx context.Context) (*sqldeadletter.Store, func(), error) {
	st, err := c.openStore(ctx)
	if err != nil {
		return nil, nil, err
	}
	dl, err := c.deadLetters(st)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return dl, st.Close, nil
}

// parseTime reads an RFC 3339 time or a duration ago ("2h" = two hours ago).
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (2h) nor an RFC 3339 time", s)
	}
	return t, nil
}
