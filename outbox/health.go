package outbox

import (
	"sync"
	"time"
)

// State is what a relay is doing.
type State string

const (
	// StateStarting: Run has not been called yet, or is checking the source.
	StateStarting State = "starting"
	// StateStandby: waiting for the leadership lock that another relay
	// holds (the outbox is being relayed, by someone else).
	StateStandby State = "standby"
	// StateLeader: holds the lock and publishes.
	StateLeader State = "leader"
)

// Health is a relay's view of itself, for readiness probes.
type Health struct {
	State State
	// StoreErr is the last failure to read or write the outbox (claim,
	// complete, lock, ...), or the start-up check's error; nil once a later
	// call succeeded.
	StoreErr error
	// BrokerErr is the last transient Publish failure; nil once a later
	// Publish call succeeded.
	BrokerErr error
	// Since is when the current failure (or, with none, the state) began.
	Since time.Time
	// Instance is the relay's instance id (RelayConfig.Instance).
	Instance string
	// Partitions lists the partitions this relay leads, on a partitioned
	// outbox (see Partitioned); nil otherwise. A relay of a partitioned
	// outbox that leads none is a standby.
	Partitions []int
	// PartitionCount is the outbox's partition count (0 until known, 1 if
	// it is not partitioned).
	PartitionCount int
}

// Ready reports whether the relay does its job: it leads or stands by, and
// can reach its outbox and (as far as it knows) its broker.
func (h Health) Ready() bool {
	return h.State != StateStarting && h.StoreErr == nil && h.BrokerErr == nil
}

// Status is a one-word summary that carries no error text: "leader",
// "standby", "starting", "database unavailable" or "broker unavailable".
func (h Health) Status() string {
	switch {
	case h.StoreErr != nil:
		return "database unavailable"
	case h.BrokerErr != nil:
		return "broker unavailable"
	}
	return string(h.State)
}

// Health returns the relay's state and its current failures.
func (r *Relay) Health() Health {
	r.health.mu.Lock()
	defer r.health.mu.Unlock()
	h := r.health.h
	if h.State == "" {
		h.State = StateStarting
	}
	h.Instance = r.cfg.Instance
	h.Partitions = append([]int(nil), h.Partitions...)
	return h
}

type healthState struct {
	mu sync.Mutex
	h  Health
}

func (s *healthState) state() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h.State
}

func (s *healthState) setState(v State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h.State != v {
		s.h.State = v
		s.h.Since = time.Now()
	}
}

func (s *healthState) setStore(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if (s.h.StoreErr == nil) != (err == nil) {
		s.h.Since = time.Now()
	}
	s.h.StoreErr = err
}

func (s *healthState) setBroker(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if (s.h.BrokerErr == nil) != (err == nil) {
		s.h.Since = time.Now()
	}
	s.h.BrokerErr = err
}

// LeaderMetrics is implemented by Metrics that record whether the relay
// leads (NewOTelMetrics does: eventkit.outbox.leader). The relay calls
// Leader(false) when Run starts and on every change.
type LeaderMetrics interface {
	Leader(bool)
}

func (s *healthState) setPartitions(n int, ps []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.h.PartitionCount = n
	if n > 1 {
		s.h.Partitions = append(s.h.Partitions[:0:0], ps...)
	} else {
		s.h.Partitions = nil
	}
}
