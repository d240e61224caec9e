// Package redis is the eventkit broker adapter for Redis Streams (Redis 6.2
// or later; tested on 7.0), built on github.com/redis/go-redis/v9. Each group
// of a topic receives every entry at least once as long as the entry is in
// the stream: an entry is delivered until a subscriber of the group acks it,
// and entries left unsettled past the ack wait (a crash, a lost connection)
// are claimed and delivered again. One subscription in a group, with no Nack
// and no ack wait expiry, gets entries in stream order. Connection failures
// are retried with backoff for as long as the subscription runs.
//
//	b, err := redis.New(ctx, redis.Options{URL: "redis://127.0.0.1:6379/0"})
//	err = b.Publish(ctx, "orders", events...)
//	sub, err := b.Subscribe(ctx, "orders", "billing", handler)
//
// A topic is a stream (key Options.Prefix + topic), a group a consumer group
// of it (replaying what the stream holds by default), each subscription a
// consumer with a unique name; an event is one entry in CloudEvents binary
// mode (eventkit.RedisBinding).
//
// Limits: durability is Redis's (Capabilities.Durable only with appendonly
// yes and appendfsync always; replicas are asynchronous, so a failover can lose acknowledged
// entries); trimming (MaxLen, XTRIM) drops entries a group has not read;
// Publish may add an event twice when a pipeline is retried, and there is no
// native dedupe (dedupe by event id in the inbox); competing subscriptions
// have no per-subject order; streams live in memory; all consumers of a
// group should use the same AckWait.
//
// The mapping, publishing, consuming and settling, each guarantee and size
// limits on consume in detail: docs/design.md, section "Package
// broker/redisbroker".
package redisbroker
