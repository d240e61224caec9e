// Package connect opens brokers and stores from the URLs the eventkit
// command takes.
package connect

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // driver "sqlite"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/kafka"
	"github.com/eventkit/eventkit/broker/rabbitmq"
	redisbroker "github.com/eventkit/eventkit/broker/redis"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/redact"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/mysql"
	"github.com/eventkit/eventkit/outbox/postgres"
	"github.com/eventkit/eventkit/outbox/sqlite"
)

// BrokerSchemes lists the broker URL forms, for help texts.
const BrokerSchemes = `nats://host:4222 (NATS JetStream), kafka://host:9092[,host:9092], amqp://user:pass@host:5672/ (RabbitMQ), redis://host:6379/0 (Redis Streams)`

// StoreSchemes lists the store URL forms, for help texts.
const StoreSchemes = `postgres://user@host:5432/db, mysql://user:pass@host:3306/db, sqlite:///path/to/file.db (or a path ending in .db)`

// ErrBadURL is wrapped by errors about a URL's form.
var ErrBadURL = errors.New("bad URL")

// Broker opens the broker a URL names and checks that it answers.
func Broker(ctx context.Context, rawURL string, log *slog.Logger) (broker.Broker, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("%w: broker %q: want one of %s", ErrBadURL, redact.URL(rawURL), BrokerSchemes)
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var b broker.Broker
	switch u.Scheme {
	case "nats":
		b, err = openNATS(ctx, rawURL, log)
	case "kafka":
		var seeds []string
		for _, h := range strings.Split(u.Host, ",") {
			if h != "" {
				seeds = append(seeds, h)
			}
		}
		b, err = kafka.New(ctx, kafka.Options{Brokers: seeds, Logger: log})
	case "amqp", "amqps":
		b, err = rabbitmq.New(ctx, rabbitmq.Options{URL: rawURL, Logger: log})
	case "redis", "rediss":
		b, err = redisbroker.New(ctx, redisbroker.Options{URL: rawURL})
	default:
		return nil, fmt.Errorf("%w: broker scheme %q: want one of %s", ErrBadURL, u.Scheme, BrokerSchemes)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot connect to broker %s: %w", redact.URL(rawURL), redact.Err(err, rawURL))
	}
	return b, nil
}

// Store is an opened database with its outbox store.
type Store struct {
	Dialect sqlinbox.Dialect
	// Outbox is the outbox store (also an outbox.Migrator).
	Outbox interface {
		outbox.Store
		outbox.Migrator
	}
	// SQL is a database/sql handle on the same database (for the inbox and
	// the dead-letter table).
	SQL *sql.DB
	// Pool is set for PostgreSQL.
	Pool *pgxpool.Pool
	// AddSQL adds events to the outbox inside a *sql.Tx of SQL.
	AddSQL  func(ctx context.Context, tx *sql.Tx, topic string, events ...eventkit.Event) error
	closers []func()
}

// Close closes the database handles.
func (s *Store) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// OpenStore opens the database a URL names, with the outbox table table
// ("" for the default), and checks that it answers.
func OpenStore(ctx context.Context, rawURL, table string) (*Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	st := &Store{}
	var err error
	switch {
	case strings.HasPrefix(rawURL, "postgres://") || strings.HasPrefix(rawURL, "postgresql://"):
		st.Dialect = sqlinbox.Postgres
		st.Pool, err = pgxpool.New(ctx, rawURL)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadURL, redact.URL(rawURL), redact.Err(err, rawURL))
		}
		st.closers = append(st.closers, st.Pool.Close)
		if err := st.Pool.Ping(ctx); err != nil {
			st.Close()
			return nil, fmt.Errorf("cannot connect to %s: %w", redact.URL(rawURL), redact.Err(err, rawURL))
		}
		st.SQL = stdlib.OpenDBFromPool(st.Pool)
		st.closers = append(st.closers, func() { st.SQL.Close() })
		pg, err := postgres.New(st.Pool, postgres.Config{Table: table})
		if err != nil {
			st.Close()
			return nil, err
		}
		st.Outbox = pg
		st.AddSQL = pg.SQL().Add
		return st, nil
	case strings.HasPrefix(rawURL, "mysql://"):
		dsn, err := mysqlDSN(rawURL)
		if err != nil {
			return nil, err
		}
		st.Dialect = sqlinbox.MySQL
		if st.SQL, err = sql.Open("mysql", dsn); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadURL, redact.URL(rawURL), redact.Err(err, rawURL))
		}
		st.closers = append(st.closers, func() { st.SQL.Close() })
		if err := st.SQL.PingContext(ctx); err != nil {
			st.Close()
			return nil, fmt.Errorf("cannot connect to %s: %w", redact.URL(rawURL), redact.Err(err, rawURL))
		}
		my, err := mysql.New(st.SQL, mysql.Config{Table: table})
		if err != nil {
			st.Close()
			return nil, err
		}
		st.Outbox = my
		st.AddSQL = my.Add
		return st, nil
	case strings.HasPrefix(rawURL, "sqlite:") || strings.HasSuffix(rawURL, ".db") || strings.HasSuffix(rawURL, ".sqlite"):
		path := strings.TrimPrefix(strings.TrimPrefix(rawURL, "sqlite://"), "sqlite:")
		if path == "" {
			return nil, fmt.Errorf("%w: %q: want sqlite:///path/to/file.db", ErrBadURL, redact.URL(rawURL))
		}
		st.Dialect = sqlinbox.SQLite
		if st.SQL, err = sql.Open("sqlite", sqlite.DSN(path)); err != nil {
			return nil, err
		}
		// SQLite has one writer at a time. One connection makes writers
		// queue in Go instead of sleeping in SQLite's busy handler, which
		// is several times faster under contention.
		st.SQL.SetMaxOpenConns(1)
		st.closers = append(st.closers, func() { st.SQL.Close() })
		if err := st.SQL.PingContext(ctx); err != nil {
			st.Close()
			return nil, fmt.Errorf("cannot open %s: %w", path, err)
		}
		sl, err := sqlite.New(st.SQL, sqlite.Config{Table: table})
		if err != nil {
			st.Close()
			return nil, err
		}
		st.Outbox = sl
		st.AddSQL = sl.Add
		return st, nil
	}
	return nil, fmt.Errorf("%w: store %q: want one of %s", ErrBadURL, redact.URL(rawURL), StoreSchemes)
}

// mysqlDSN turns mysql://user:pass@host:port/db?params into a
// go-sql-driver DSN.
func mysqlDSN(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%w: %q: want mysql://user:pass@host:3306/db", ErrBadURL, redact.URL(raw))
	}
	c := mysqldrv.NewConfig()
	c.User = u.User.Username()
	c.Passwd, _ = u.User.Password()
	c.Net = "tcp"
	c.Addr = u.Host
	c.DBName = strings.TrimPrefix(u.Path, "/")
	c.ParseTime = true
	c.Params = map[string]string{}
	for k, v := range u.Query() {
		c.Params[k] = v[0]
	}
	return c.FormatDSN(), nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.SQL.PingContext(ctx) }
