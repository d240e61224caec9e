// Package connect opens any eventkit broker and outbox store from a URL: the
// adapter a URL's scheme names is connected, checked to answer (within a
// timeout, 15 s by default) and returned ready to use, or an error is
// returned whose text never shows a password, token or key of the URL. TLS and
// authentication are set in the URL with each ecosystem's own parameters
// (libpq's sslmode/sslrootcert/sslcert/sslkey, MySQL's ssl-ca/ssl-mode,
// redis-cli's cacert/cert/key, RabbitMQ's cacertfile/certfile/keyfile and
// auth_mechanism, the nats CLI's creds/nkey/tlsca/tlscert/tlskey, Kafka's
// security.protocol/sasl.mechanism/ssl.ca.location); docs/security.md has
// the table. A certificate that does not verify fails the connection: no
// parameter turns verification off except the ecosystem's explicit one
// (sslmode=require, tls=skip-verify).
//
// Use it where a program takes its broker and database from configuration:
//
//	b, err := connect.Broker(ctx, os.Getenv("EVENTKIT_BROKER"), connect.WithLogger(log))
//	st, err := connect.OpenStore(ctx, os.Getenv("EVENTKIT_STORE"), connect.WithOutboxTable("orders_outbox"))
//	defer st.Close()
//	err = st.AddSQL(ctx, tx, "orders", ev) // inside your *sql.Tx on st.SQL
//
// Broker URLs: nats:// or tls:// (NATS JetStream), kafka:// (Kafka), amqp://
// or amqps:// (RabbitMQ), redis:// or rediss:// (Redis Streams). Store URLs:
// postgres:// (PostgreSQL), mysql:// (MySQL and MariaDB), sqlite:///path or a
// path ending in .db (SQLite). Redact shows a URL with its credentials
// hidden, for log lines.
//
// Limits: connect is for the common case; a program that needs an adapter's
// own options (stream settings, partition counts) calls that adapter's
// constructor directly.
package connect
