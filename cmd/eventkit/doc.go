// Command eventkit runs the outbox relay daemon, the operator console, schema
// migrations, outbox and dead-letter inspection, the demo and benchmarks. It
// never touches data it did not create unless the command says it changes
// it (relay, migrate up, requeue, replay, skip, purge): bench works on
// its own uniquely named tables, streams and groups and removes them on
// exit, SIGINT included; commands that only read never create a file or a
// table. It never prints a secret: every URL it shows goes through
// internal/redact, and its output streams are scrubbed of the passwords and
// tokens found in its arguments, its EVENTKIT_* environment and its
// configuration file. Errors are one line on stderr; the exit status is 0
// on success, 1 on failure, 2 for a usage error (a bad flag, variable or
// configuration file) and 3 when the demo's verdict fails.
//
//	eventkit demo                       # zero set-up: embedded NATS JetStream + SQLite
//	eventkit relay --store postgres://... --broker nats://...
//	eventkit relay --config /etc/eventkit/relay.yaml --print-config
//	eventkit console --store ... --broker ...
//	eventkit migrate up --store ...
//	eventkit outbox status --store ...
//	eventkit dlq list --store ...
//	eventkit bench publish --broker nats://...
//
// The connection flags, and every flag of relay and console, have an
// EVENTKIT_* variable; relay and console also read a YAML
// file (--config, docs/config.md), with the precedence flag > variable >
// file > default. Run `eventkit <command> --help` for each command's flags
// and an example.
//
// Limits: the relay and console hold connections for their whole run and
// stop on SIGINT or SIGTERM; bench figures depend on the machine and its
// load; --help shows defaults, never a variable's value.
package main
