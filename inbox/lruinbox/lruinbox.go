// Package lruinbox is an in-process inbox: a bounded LRU of processed keys
// with a TTL. Within one process, a key that was processed within the TTL and
// not evicted by the size bound is a duplicate (inbox.ErrDuplicate), and a
// key being processed by another goroutine is held off (inbox.ErrInProgress)
// until that goroutine finishes. Nothing is shared between processes and
// everything is forgotten on restart, so a redelivery to another consumer
// instance, after a crash, after the TTL or after eviction runs the handler
// again. Use it to absorb bursts of broker-level duplicates (redelivery after
// a lost ack) in front of handlers that are idempotent anyway; use sqlinbox
// when duplicates must never apply twice.
//
// It keeps its expiry times itself in a golang-lru/v2 cache rather than using
// golang-lru's expirable.LRU, whose cleanup goroutine can never be stopped.
package lruinbox

import (
	"context"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/eventkit/eventkit/inbox"
)

// Options configure an Inbox.
type Options struct {
	// Size is the most keys remembered (default 100000).
	Size int
	// TTL is how long a processed key is remembered (default 1h).
	TTL time.Duration
}

// Inbox is an in-process inbox. It is safe for concurrent use.
type Inbox struct {
	ttl     time.Duration
	mu      sync.Mutex
	done    *lru.Cache[inbox.Key, time.Time] // key -> expiry
	pending map[inbox.Key]struct{}
}

var _ inbox.Inbox = (*Inbox)(nil)

// New returns an empty inbox.
func New(opts Options) *Inbox {
	if opts.Size <= 0 {
		opts.Size = 100000
	}
	if opts.TTL <= 0 {
		opts.TTL = time.Hour
	}
	c, _ := lru.New[inbox.Key, time.Time](opts.Size) // only fails for size <= 0
	return &Inbox{ttl: opts.TTL, done: c, pending: map[inbox.Key]struct{}{}}
}

// Len returns the number of keys remembered (expired ones included until
// they are looked up or evicted).
func (in *Inbox) Len() int { return in.done.Len() }

// Process implements inbox.Inbox.
func (in *Inbox) Process(ctx context.Context, key inbox.Key, fn func(ctx context.Context) error) error {
	key.EventType = "" // not part of the identity
	in.mu.Lock()
	if exp, ok := in.done.Get(key); ok {
		if time.Now().Before(exp) {
			in.mu.Unlock()
			return inbox.ErrDuplicate
		}
		in.done.Remove(key)
	}
	if _, busy := in.pending[key]; busy {
		in.mu.Unlock()
		return inbox.ErrInProgress
	}
	in.pending[key] = struct{}{}
	in.mu.Unlock()

	ok := false
	defer func() {
		in.mu.Lock()
		delete(in.pending, key)
		if ok {
			in.done.Add(key, time.Now().Add(in.ttl))
		}
		in.mu.Unlock()
	}()
	if err := fn(ctx); err != nil {
		return err
	}
	ok = true
	return nil
}
