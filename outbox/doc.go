// Package outbox is the transactional outbox: services write events into an
// outbox table inside their own database transaction (Store.Add with the
// caller's pgx.Tx or *sql.Tx), and a Relay publishes the committed events to
// a broker.Publisher, in order, with confirms.
//
// (Full guarantees, gap safety and HA are documented below as they land.)
package outbox
