package outbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"time"
)

// ErrRelaysRunning is returned when the partition count of an outbox is
// changed while a relay holds (or may still hold) a partition lease: stop
// every relay first, then change it, then start them again.
var ErrRelaysRunning = errors.New("outbox: relays hold partition leases; stop them before changing the partition count")

// Partitioned is implemented by stores whose outbox can be split into
// partitions by a hash of the event subject (outbox/pgoutbox and
// outbox/mysqloutbox; set with the store's SetPartitions or `eventkit migrate
// --partitions N`). A subject always maps to exactly one partition. When the
// count is above 1, Relay.Run leads partitions instead of the whole outbox:
// each partition has its own lease in the database, and the relays that run
// on the outbox share the partitions (see the package doc).
type Partitioned interface {
	// Partitions returns the partition count recorded in the database (1
	// when the outbox is not split).
	Partitions(ctx context.Context) (int, error)
	// Partition returns a Source whose Claim returns only the records of
	// partition p of n (the other methods act on the whole outbox).
	Partition(p, n int) Source
	// Leases returns the partition leases of the outbox.
	Leases() Leases
}

// Leases are the leadership leases of an outbox's partitions and the
// membership records of the relays that share them. All times are the
// database's clock, so relays on hosts with skewed clocks agree.
type Leases interface {
	// Join records instance as alive for ttl and returns how many relay
	// instances are alive now (including it).
	Join(ctx context.Context, instance string, ttl time.Duration) (alive int, err error)
	// Acquire takes the lease of partition p for instance for ttl if it is
	// free, expired, or already instance's. It reports whether it did.
	Acquire(ctx context.Context, instance string, p int, ttl time.Duration) (bool, error)
	// Renew extends every lease instance holds by ttl and returns the
	// partitions it holds.
	Renew(ctx context.Context, instance string, ttl time.Duration) ([]int, error)
	// Release gives up instance's lease of partition p (a lease that is not
	// instance's is left alone).
	Release(ctx context.Context, instance string, p int) error
	// Leave releases all of instance's leases and its membership.
	Leave(ctx context.Context, instance string) error
	// List returns every partition's lease and the live relays.
	List(ctx context.Context) (LeaseStatus, error)
}

// LeaseStatus is who leads which partition, for operators (`eventkit
// outbox status`).
type LeaseStatus struct {
	Partitions int
	Leases     []Lease
	// Instances are the relays alive now (their membership has not
	// expired), sorted.
	Instances []string
}

// Lease is one partition's lease.
type Lease struct {
	Partition int
	// Owner is the relay instance holding it ("" if none). A lease whose
	// ExpiresIn is not positive is free to take even if Owner is set.
	Owner     string
	ExpiresIn time.Duration
}

// Held reports whether the lease is held now.
func (l Lease) Held() bool { return l.Owner != "" && l.ExpiresIn > 0 }

// LeadersOf groups st's held leases by owner: instance -> partitions.
func (st LeaseStatus) LeadersOf() map[string][]int {
	m := map[string][]int{}
	for _, l := range st.Leases {
		if l.Held() {
			m[l.Owner] = append(m[l.Owner], l.Partition)
		}
	}
	return m
}

// DefaultInstance returns the relay instance id used when
// RelayConfig.Instance is empty: "hostname-pid".
func DefaultInstance() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "relay"
	}
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}

// PartitionMetrics is implemented by Metrics that record which partitions
// this relay leads (NewOTelMetrics does: eventkit.outbox.leader with the
// attribute "partition"; an unpartitioned relay's LeaderMetrics.Leader is
// partition "0").
type PartitionMetrics interface {
	PartitionLeader(p int, leads bool)
}

// partitioned returns the partition count of the relay's source, 1 if it
// is not partitioned.
func (r *Relay) partitions(ctx context.Context) (Partitioned, int, error) {
	ps, ok := r.store.(Partitioned)
	if !ok {
		return nil, 1, nil
	}
	n, err := ps.Partitions(ctx)
	if err != nil {
		return nil, 0, err
	}
	return ps, max(n, 1), nil
}

// partLock is a held partition lease as a Lock: lost is closed by the
// coordinator when the lease could not be renewed in time.
type partLock struct {
	lost     chan struct{}
	lostOnce sync.Once
}

func (l *partLock) Lost() <-chan struct{}         { return l.lost }
func (l *partLock) Release(context.Context) error { return nil } // the coordinator releases the lease
func (l *partLock) lose()                         { l.lostOnce.Do(func() { close(l.lost) }) }

// partLeader is one partition this relay leads.
type partLeader struct {
	lock     *partLock
	cancel   context.CancelFunc
	done     chan struct{}
	deadline time.Time // the lease counts as lost from then on, unless renewed
}

// runPartitioned is Run for a partitioned outbox of n partitions: it joins
// the relays sharing the outbox, takes up to ceil(n/alive) partition leases,
// leads each in its own publish loop, renews the leases every
// LeaseTTL/4, gives partitions up (after their loop has stopped, so that
// nothing of theirs is in flight) when it holds more than its share, and
// stops a partition the moment its lease may have expired. It returns when
// ctx ends (releasing every lease) or when the partition count changes
// (errPartitionsChanged).
func (r *Relay) runPartitioned(ctx context.Context, ps Partitioned, n int) error {
	leases := ps.Leases()
	inst := r.cfg.Instance
	ttl := r.cfg.LeaseTTL
	log := r.cfg.Logger.With("instance", inst, "partitions", n)
	held := map[int]*partLeader{}
	var wg sync.WaitGroup

	stop := func(p int, release bool) {
		pl := held[p]
		pl.cancel()
		<-pl.done // its publishes have returned: nothing of it is in flight
		delete(held, p)
		r.setPartitionLeader(p, false)
		if release {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := leases.Release(rctx, inst, p); err != nil {
				log.Warn("outbox: releasing partition lease failed (it expires by itself)", "partition", p, "err", err)
			}
			cancel()
		}
	}
	defer func() {
		for p := range held {
			stop(p, true)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = leases.Leave(rctx, inst)
		cancel()
		wg.Wait()
		r.setLeader(false)
		r.health.setPartitions(1, nil)
	}()
	start := func(p int, deadline time.Time) {
		pctx, cancel := context.WithCancel(ctx)
		pl := &partLeader{lock: &partLock{lost: make(chan struct{})}, cancel: cancel, done: make(chan struct{}), deadline: deadline}
		held[p] = pl
		r.setPartitionLeader(p, true)
		r.stats.leaderships.Add(1)
		log.Info("outbox: relay leads partition", "partition", p)
		wake := r.addWake()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(pl.done)
			defer r.removeWake(wake)
			r.lead(pctx, pl.lock, ps.Partition(p, n), wake, p == 0)
		}()
	}

	// Start from a partition picked by the instance id, so that relays
	// starting together do not all race for partition 0 first.
	offset := int(fnv32(inst) % uint32(n))
	every := max(ttl/4, 10*time.Millisecond)
	for {
		sent := time.Now()
		alive, err := leases.Join(ctx, inst, ttl)
		var mine []int
		if err == nil {
			mine, err = leases.Renew(ctx, inst, ttl)
		}
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		if err != nil {
			r.storeError("lease", err)
			for p, pl := range held {
				if !now.Before(pl.deadline) {
					log.Warn("outbox: partition lease could not be renewed in time; stopping it", "partition", p)
					pl.lock.lose()
					stop(p, false)
				}
			}
		} else {
			r.health.setStore(nil)
			// A renewal sent at `sent` makes the lease last until at least
			// sent+ttl on the database's clock; stop a margin before that.
			deadline := sent.Add(ttl - ttl/4)
			for p, pl := range held {
				if slices.Contains(mine, p) {
					pl.deadline = deadline
				} else {
					log.Warn("outbox: partition lease was lost (expired and taken); stopping it", "partition", p)
					pl.lock.lose()
					stop(p, false)
				}
			}
			for _, p := range mine {
				if _, ok := held[p]; !ok && p < n { // a lease of an earlier run of this instance id
					start(p, deadline)
				}
			}
			if cur, err := ps.Partitions(ctx); err == nil && cur != n {
				log.Warn("outbox: partition count changed; re-reading it", "now", cur)
				return errPartitionsChanged
			}
			target := (n + max(alive, 1) - 1) / max(alive, 1)
			if len(held) > target { // give the extras to the others (a relay joined)
				ps := sortedKeys(held)
				for _, p := range ps[target:] {
					log.Info("outbox: relay hands partition over", "partition", p, "alive", alive, "share", target)
					stop(p, true)
				}
			}
			for i := 0; i < n && len(held) < target; i++ {
				p := (offset + i) % n
				if _, ok := held[p]; ok {
					continue
				}
				sent := time.Now()
				ok, err := leases.Acquire(ctx, inst, p, ttl)
				if err != nil {
					if ctx.Err() == nil {
						r.storeError("lease", err)
					}
					break
				}
				if ok {
					start(p, sent.Add(ttl-ttl/4))
				}
			}
		}
		r.setLeader(len(held) > 0)
		r.health.setPartitions(n, sortedKeys(held))
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

var errPartitionsChanged = errors.New("outbox: partition count changed")

func (r *Relay) setPartitionLeader(p int, v bool) {
	if pm, ok := r.cfg.Metrics.(PartitionMetrics); ok {
		pm.PartitionLeader(p, v)
	}
}

// addWake registers a wake channel for one partition loop.
func (r *Relay) addWake() chan struct{} {
	c := make(chan struct{}, 1)
	r.wakeMu.Lock()
	r.wakes[c] = struct{}{}
	r.wakeMu.Unlock()
	return c
}

func (r *Relay) removeWake(c chan struct{}) {
	r.wakeMu.Lock()
	delete(r.wakes, c)
	r.wakeMu.Unlock()
}

func sortedKeys[V any](m map[int]V) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	return ks
}

// fnv32 is FNV-1a over s.
func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// PartitionSetter is implemented by stores whose partition count can be
// changed (outbox/pgoutbox, outbox/mysqloutbox): `eventkit migrate --partitions`.
type PartitionSetter interface {
	SetPartitions(ctx context.Context, n int) error
}
