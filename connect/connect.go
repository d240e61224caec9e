package connect

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // driver "sqlite"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/kafkabroker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/redact"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/mysqloutbox"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
	"github.com/eventkit/eventkit/outbox/sqliteoutbox"
)

// BrokerSchemes lists the broker URL forms, for help texts.
const BrokerSchemes = `nats://host:4222 or tls://host:4222 (NATS JetStream), kafka://host:9092[,host:9092] (Kafka), amqp://user:pass@host:5672/ or amqps:// (RabbitMQ), redis://host:6379/0 or rediss:// (Redis Streams)`

// StoreSchemes lists the store URL forms, for help texts.
const StoreSchemes = `postgres://user@host:5432/db, mysql://user:pass@host:3306/db, sqlite:///path/to/file.db (or a path ending in .db)`

// ErrBadURL is wrapped by errors about a URL's form (unknown scheme, unknown
// or invalid TLS or authentication parameter, unreadable certificate file).
var ErrBadURL = errors.New("bad URL")

// Option configures Broker and OpenStore.
type Option func(*config)

type config struct {
	log         *slog.Logger
	outboxTable string
	timeout     time.Duration
	tls         *tls.Config
	mustExist   bool
}

// WithLogger sets the logger of the broker adapter (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithOutboxTable sets the outbox table OpenStore's store uses (default the
// store's own, eventkit_outbox).
func WithOutboxTable(name string) Option { return func(c *config) { c.outboxTable = name } }

// WithTimeout bounds connecting and the first check that the server answers
// (default 15 s).
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithTLS makes the connection use TLS with cfg (its roots, client
// certificates and server name), in place of the TLS files the URL names.
// A URL whose scheme is plain (nats://, redis://, amqp://, kafka:// without
// security.protocol) then uses TLS too; a ServerName left empty is set to
// the URL's host.
func WithTLS(cfg *tls.Config) Option { return func(c *config) { c.tls = cfg } }

// MustExist makes OpenStore refuse a store that does not exist yet instead
// of creating it: a SQLite file is opened, never created (a typo in the path
// is an error wrapping fs.ErrNotExist, and no empty file is left behind).
// Use it for commands that only read or change existing data. Server
// databases (PostgreSQL, MySQL) are never created by OpenStore.
func MustExist() Option { return func(c *config) { c.mustExist = true } }

func options(opts []Option) config {
	c := config{timeout: 15 * time.Second}
	for _, o := range opts {
		o(&c)
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	return c
}

// Redact returns rawURL with its password, token-like user info and
// secret-like query parameters (password, token, key, creds, ...) replaced
// by "xxxxx"; text that does not parse as a URL has everything before its
// last '@' and its whole query hidden. Use it for every URL a program logs.
func Redact(rawURL string) string { return redact.URL(rawURL) }

// Broker opens the broker rawURL names and checks that it answers.
func Broker(ctx context.Context, rawURL string, opts ...Option) (broker.Broker, error) {
	c := options(opts)
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("%w: broker %q: want one of %s", ErrBadURL, redact.URL(rawURL), BrokerSchemes)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var b broker.Broker
	switch u.Scheme {
	case "nats", "tls":
		b, err = openNATS(ctx, u, c)
	case "kafka":
		b, err = openKafka(ctx, u, c)
	case "amqp", "amqps":
		b, err = openRabbitMQ(ctx, u, c)
	case "redis", "rediss":
		b, err = openRedis(ctx, u, c)
	default:
		return nil, fmt.Errorf("%w: broker scheme %q: want one of %s", ErrBadURL, u.Scheme, BrokerSchemes)
	}
	if err != nil {
		if errors.Is(err, ErrBadURL) {
			return nil, redact.Err(err, rawURL)
		}
		return nil, fmt.Errorf("cannot connect to broker %s: %w", redact.URL(rawURL), redact.Err(err, rawURL))
	}
	return b, nil
}

func openNATS(ctx context.Context, u *url.URL, c config) (broker.Broker, error) {
	q := u.Query()
	o := natsbroker.Options{Name: "eventkit", Logger: c.log}
	if err := natsOptions(q, c.tls, u, &o); err != nil {
		return nil, err
	}
	if err := unknownParams(q, "nats"); err != nil {
		return nil, err
	}
	plain := *u
	plain.RawQuery = ""
	b, err := natsbroker.Connect(ctx, plain.String(), o)
	if errors.Is(err, natsbroker.ErrCredentials) {
		return nil, fmt.Errorf("%w: nats URL: %w", ErrBadURL, err)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

func openKafka(ctx context.Context, u *url.URL, c config) (broker.Broker, error) {
	var seeds []string
	for _, h := range strings.Split(u.Host, ",") {
		if h != "" {
			seeds = append(seeds, h)
		}
	}
	q := u.Query()
	kopts, err := kafkaOptions(q, u, c.tls)
	if err != nil {
		return nil, err
	}
	if err := unknownParams(q, "kafka"); err != nil {
		return nil, err
	}
	return kafkabroker.New(ctx, kafkabroker.Options{Brokers: seeds, Logger: c.log, ClientOptions: kopts})
}

func openRabbitMQ(ctx context.Context, u *url.URL, c config) (broker.Broker, error) {
	q := u.Query()
	cfg, err := amqpOptions(q, u, c.tls)
	if err != nil {
		return nil, err
	}
	rest := *u
	rest.RawQuery = q.Encode()
	if cfg != nil {
		rest.Scheme = "amqps"
	}
	return rabbitmqbroker.New(ctx, rabbitmqbroker.Options{URL: rest.String(), Logger: c.log, TLS: cfg})
}

func openRedis(ctx context.Context, u *url.URL, c config) (broker.Broker, error) {
	q := u.Query()
	cfg, err := redisTLS(q, u, c.tls)
	if err != nil {
		return nil, err
	}
	rest := *u
	rest.RawQuery = q.Encode() // the parameters go-redis reads itself
	return redisbroker.New(ctx, redisbroker.Options{URL: rest.String(), TLS: cfg})
}

// Store is an opened database with its outbox store.
type Store struct {
	// Dialect is the database's SQL dialect, for sqlinbox and deadletter.
	Dialect sqlinbox.Dialect
	// Outbox is the outbox store (also an outbox.Migrator).
	Outbox interface {
		outbox.Store
		outbox.Migrator
	}
	// SQL is a database/sql handle on the same database (for the inbox, the
	// dead-letter table and your own tables).
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

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.SQL.PingContext(ctx) }

// OpenStore opens the database rawURL names, with its outbox store, and
// checks that it answers.
func OpenStore(ctx context.Context, rawURL string, opts ...Option) (*Store, error) {
	c := options(opts)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	st := &Store{}
	fail := func(err error) (*Store, error) {
		st.Close()
		return nil, err
	}
	cannot := func(err error) (*Store, error) {
		return fail(fmt.Errorf("cannot connect to %s: %w", redact.URL(rawURL), redact.Err(err, rawURL)))
	}
	switch {
	case strings.HasPrefix(rawURL, "postgres://") || strings.HasPrefix(rawURL, "postgresql://"):
		st.Dialect = sqlinbox.Postgres
		pc, err := pgxpool.ParseConfig(rawURL)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadURL, redact.URL(rawURL), redact.Err(err, rawURL))
		}
		if c.tls != nil {
			pc.ConnConfig.TLSConfig = tlsFor(c.tls, &url.URL{Host: pc.ConnConfig.Host})
			pc.ConnConfig.Fallbacks = nil
		}
		if st.Pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadURL, redact.URL(rawURL), redact.Err(err, rawURL))
		}
		st.closers = append(st.closers, st.Pool.Close)
		if err := st.Pool.Ping(ctx); err != nil {
			return cannot(err)
		}
		st.SQL = stdlib.OpenDBFromPool(st.Pool)
		st.closers = append(st.closers, func() { st.SQL.Close() })
		pg, err := pgoutbox.New(st.Pool, pgoutbox.Config{Table: c.outboxTable})
		if err != nil {
			return fail(err)
		}
		st.Outbox, st.AddSQL = pg, pg.SQL().Add
		return st, nil
	case strings.HasPrefix(rawURL, "mysql://"):
		mc, err := mysqlConfig(rawURL, c.tls)
		if err != nil {
			return nil, redact.Err(err, rawURL)
		}
		conn, err := mysqldrv.NewConnector(mc)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadURL, redact.URL(rawURL), redact.Err(err, rawURL))
		}
		st.Dialect = sqlinbox.MySQL
		st.SQL = sql.OpenDB(conn)
		st.closers = append(st.closers, func() { st.SQL.Close() })
		if err := st.SQL.PingContext(ctx); err != nil {
			return cannot(err)
		}
		my, err := mysqloutbox.New(st.SQL, mysqloutbox.Config{Table: c.outboxTable})
		if err != nil {
			return fail(err)
		}
		st.Outbox, st.AddSQL = my, my.Add
		return st, nil
	case strings.HasPrefix(rawURL, "sqlite:") || strings.HasSuffix(rawURL, ".db") || strings.HasSuffix(rawURL, ".sqlite"):
		path := strings.TrimPrefix(strings.TrimPrefix(rawURL, "sqlite://"), "sqlite:")
		if path == "" {
			return nil, fmt.Errorf("%w: %q: want sqlite:///path/to/file.db", ErrBadURL, redact.URL(rawURL))
		}
		st.Dialect = sqlinbox.SQLite
		dsn := sqliteoutbox.DSN(path)
		if c.mustExist {
			if _, err := os.Stat(path); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil, fmt.Errorf("store %s: %w: no SQLite database there (check the path; eventkit migrate up creates one)", redact.URL(rawURL), fs.ErrNotExist)
				}
				return nil, fmt.Errorf("store %s: %w", redact.URL(rawURL), err)
			}
			dsn += "&mode=rw" // and never create it, should it vanish meanwhile
		}
		var err error
		if st.SQL, err = sql.Open("sqlite", dsn); err != nil {
			return nil, err
		}
		// SQLite has one writer at a time. One connection makes writers
		// queue in Go instead of sleeping in SQLite's busy handler, which
		// is several times faster under contention.
		st.SQL.SetMaxOpenConns(1)
		st.closers = append(st.closers, func() { st.SQL.Close() })
		if err := st.SQL.PingContext(ctx); err != nil {
			return fail(fmt.Errorf("cannot open %s: %w", path, err))
		}
		sl, err := sqliteoutbox.New(st.SQL, sqliteoutbox.Config{Table: c.outboxTable})
		if err != nil {
			return fail(err)
		}
		st.Outbox, st.AddSQL = sl, sl.Add
		return st, nil
	}
	return nil, fmt.Errorf("%w: store %q: want one of %s", ErrBadURL, redact.URL(rawURL), StoreSchemes)
}
