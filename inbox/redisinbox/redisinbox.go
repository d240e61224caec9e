// Package redisinbox is an inbox in Redis: reserve-then-confirm with SET NX.
// Process first reserves the
// key with SET NX and a short lease ("pending"), runs the handler, then marks
// the key "done" with a TTL; a failing handler releases its reservation. A
// concurrent duplicate that finds the reservation gets inbox.ErrInProgress
// (the consumer runtime retries it later and then finds "done"); a later
// duplicate within the TTL gets inbox.ErrDuplicate. This is NOT atomic with
// the handler's effects: if the process dies (or Redis becomes unreachable)
// after the effect and before the "done" mark, or the handler runs longer
// than the lease, the event can be handled again once the lease expires.
// Duplicates arriving after the TTL are not detected, and a Redis without
// persistence forgets everything on restart. Use it for effects that are
// cheap to repeat or idempotent anyway; use sqlinbox when the effect is a
// database write.
package redisinbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eventkit/eventkit/inbox"
)

// Options configure an Inbox.
type Options struct {
	// Prefix of every key (default "eventkit:inbox:"). Keys are
	// Prefix + consumer + ":" + event id.
	Prefix string
	// Lease is how long a reservation holds off concurrent duplicates
	// (default 1 minute). Make it longer than the handler can take: the
	// consumer runtime's HandlerTimeout.
	Lease time.Duration
	// TTL is how long a processed key is remembered (default 24h).
	TTL time.Duration
	// OnError is told about errors that Process cannot return without
	// causing a certain duplicate: a failed "done" mark after the handler
	// succeeded (the handler's effect happened; the key stays reserved until
	// the lease ends). Default: ignored.
	OnError func(key inbox.Key, err error)
}

// Inbox is a Redis inbox. It is safe for concurrent use.
type Inbox struct {
	rdb  redis.UniversalClient
	opts Options
}

var _ inbox.Inbox = (*Inbox)(nil)

// New returns an inbox on rdb (a *redis.Client, *redis.ClusterClient, ...).
// Each Process makes two round trips (SET NX, then SET or a release
// script); give the client a pool at least as large as the consumer's
// Concurrency (redis.Options.PoolSize), or workers queue for connections.
func New(rdb redis.UniversalClient, opts Options) *Inbox {
	if opts.Prefix == "" {
		opts.Prefix = "eventkit:inbox:"
	}
	if opts.Lease <= 0 {
		opts.Lease = time.Minute
	}
	if opts.TTL <= 0 {
		opts.TTL = 24 * time.Hour
	}
	return &Inbox{rdb: rdb, opts: opts}
}

const doneValue = "done"

// release deletes the key only if it still holds our reservation.
var release = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

func (in *Inbox) key(k inbox.Key) string { return in.opts.Prefix + k.Consumer + ":" + k.EventID }

// Process implements inbox.Inbox: reserve, run fn, mark done (or release).
func (in *Inbox) Process(ctx context.Context, key inbox.Key, fn func(ctx context.Context) error) (err error) {
	rkey := in.key(key)
	var b [12]byte
	_, _ = rand.Read(b[:])
	token := "pending:" + hex.EncodeToString(b[:])
	for try := 0; ; try++ {
		ok, err := in.rdb.SetNX(ctx, rkey, token, in.opts.Lease).Result()
		if err != nil {
			return fmt.Errorf("redisinbox: reserve %s: %w", key, err)
		}
		if ok {
			break
		}
		v, err := in.rdb.Get(ctx, rkey).Result()
		switch {
		case errors.Is(err, redis.Nil) && try == 0:
			continue // expired or released between SET and GET
		case err != nil && !errors.Is(err, redis.Nil):
			return fmt.Errorf("redisinbox: read %s: %w", key, err)
		case v == doneValue:
			return inbox.ErrDuplicate
		default:
			return inbox.ErrInProgress
		}
	}
	confirmed := false
	defer func() {
		if confirmed {
			return
		}
		// The handler failed or panicked: give the key back so a retry can
		// take it at once (only if the reservation is still ours).
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = release.Run(rctx, in.rdb, []string{rkey}, token).Err()
	}()
	if err := fn(ctx); err != nil {
		return err
	}
	confirmed = true
	// Mark done even if ctx has ended: the effect happened.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := in.rdb.Set(mctx, rkey, doneValue, in.opts.TTL).Err(); err != nil && in.opts.OnError != nil {
		in.opts.OnError(key, fmt.Errorf("redisinbox: mark %s done: %w", key, err))
	}
	return nil
}
