// Package natsbroker is the NATS JetStream adapter of package broker. Publish
// returns nil only when JetStream has stored every event of the call (on disk
// with file storage; in a cluster, on a majority of replicas), and a
// *broker.PublishError names the events that were not; within the stream's
// duplicate window a re-published event is stored once (Nats-Msg-Id).
// Delivery is at least once: a delivery not settled within AckWait comes
// again with a higher Attempt, Nack(delay) is a server-side delay, Term never
// delivers to the group again. One subscriber of a group receives events in
// stream order until a redelivery; stored events, consumers and their
// positions survive a server restart with file storage, and a new group
// replays the whole stream.
//
//	nc, _ := nats.Connect("nats://127.0.0.1:4222")
//	b, err := natsbroker.New(nc, natsbroker.Options{})
//	err = b.Publish(ctx, "orders", events...)
//	sub, err := b.Subscribe(ctx, "orders", "billing", handler)
//
// A topic is a stream (created on first use with StreamOptions), a group a
// durable pull consumer whose MaxAckPending is the subscription's
// MaxInFlight, so nothing is buffered beyond it; an event is a message in
// CloudEvents binary mode on "<stream>.<type>". The client reconnects forever;
// subscriptions resume by themselves. The embedded server for zero-setup use
// is package natsembed, so that importing this adapter does not link
// nats-server.
//
// Limits: competing subscribers share a stream with no per-subject order
// (OrderedPerSubject is false); duplicates outside the dedupe window, or with
// Options.DisableDedupe, reach consumers (dedupe by event id in the inbox);
// an ack is not confirmed unless Options.ConfirmAcks, so an ack lost with the
// connection redelivers after AckWait; a message is at most the server's
// max_payload (1 MiB by default); memory storage loses everything when the
// server stops.
//
// The mapping, each guarantee (publishing, dedupe, delivery, flow control,
// order, durability, reconnect, close), the embedded server, performance and
// size limits on consume: docs/design.md, section "Package broker/natsbroker".
package natsbroker
