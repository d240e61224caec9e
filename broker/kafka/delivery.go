package kafka

import (
	"context"
	"iter"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
)

// Delivery is one delivery of a Kafka record. Besides broker.Delivery it
// exposes the record (read-only).
type Delivery struct {
	broker.SettleOnce
	s   *Subscription
	st  *partState
	e   *entry
	ev  eventkit.Event
	err error
}

var _ broker.Delivery = (*Delivery)(nil)

func newDelivery(s *Subscription, st *partState, e *entry) *Delivery {
	d := &Delivery{s: s, st: st, e: e}
	d.ev, d.err = DecodeRecord(e.rec)
	return d
}

// DecodeRecord decodes a record in CloudEvents binary mode (Kafka binding).
// A record that is not an event gives a *eventkit.DecodeError keeping its
// value and headers.
func DecodeRecord(r *kgo.Record) (eventkit.Event, error) {
	return eventkit.KafkaBinding.Decode(headerSeq(r.Headers), "", r.Value)
}

func headerSeq(hs []kgo.RecordHeader) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, h := range hs {
			if !yield(h.Key, string(h.Value)) {
				return
			}
		}
	}
}

// Event is the decoded event (zero if DecodeErr is set).
func (d *Delivery) Event() eventkit.Event { return d.ev }

// DecodeErr is a *eventkit.DecodeError for records that are not events.
func (d *Delivery) DecodeErr() error { return d.err }

// Topic is the topic the event was published to (for a redelivery from the
// retry topic, the original topic).
func (d *Delivery) Topic() string { return d.e.topic }

// Attempt is the delivery count, from 1 (see the package doc for how it is
// kept across retries and crashes).
func (d *Delivery) Attempt() int { return d.e.attempt }

// Record is the Kafka record delivered (on a redelivery, the record of the
// retry topic). Treat it as read-only.
func (d *Delivery) Record() *kgo.Record { return d.e.rec }

// Ack settles the delivery; its offset is committed once every record before
// it on the partition is settled too.
func (d *Delivery) Ack(ctx context.Context) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	d.s.settle(d.st, d.e)
	return nil
}

// Term settles the delivery for good (like Ack: Kafka has no other way to
// drop a record).
func (d *Delivery) Term(ctx context.Context) error { return d.Ack(ctx) }

// Nack produces the record to the group's retry topic, due after delay and
// with the next attempt number, and then settles this delivery. If the
// produce fails, Nack returns the error and the record is retried when its
// ack wait runs out.
func (d *Delivery) Nack(ctx context.Context, delay time.Duration) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	return d.s.nack(ctx, d.st, d.e, delay)
}
