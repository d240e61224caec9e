package kafkabroker

import (
	"context"
	"errors"
	"iter"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/adapterkit"
)

// ErrRevoked is returned by Ack of a delivery whose partition was revoked or
// lost: another member owns the record now, and reads it again.
var ErrRevoked = errors.New("kafka: partition revoked: the delivery is no longer this member's to settle")

// Delivery is one delivery of a Kafka record. Besides broker.Delivery it
// exposes the record (read-only).
type Delivery struct {
	adapterkit.SettleOnce
	s   *Subscription
	st  *partState
	e   *entry
	ev  eventkit.Event
	err error
}

var _ broker.Delivery = (*Delivery)(nil)

func newDelivery(s *Subscription, st *partState, e *entry) *Delivery {
	d := &Delivery{s: s, st: st, e: e}
	if d.err = checkRecordSize(e.rec, s.b.maxBytes); d.err == nil {
		d.ev, d.err = DecodeRecord(e.rec)
	}
	return d
}

// checkRecordSize refuses a record whose key, value and headers are over
// limit (the adapter's MaxMessageBytes): a *eventkit.DecodeError wrapping a
// *eventkit.SizeError, keeping at most adapterkit.TooLargeKeep bytes of the
// value (see adapterkit.CheckSize).
func checkRecordSize(r *kgo.Record, limit int) error {
	hn := 0
	for _, h := range r.Headers {
		hn += len(h.Key) + len(h.Value)
	}
	n := len(r.Key) + len(r.Value) + hn
	if limit <= 0 || n <= limit+adapterkit.Allowance(len(r.Headers)) {
		return nil
	}
	var hs map[string]string // only small headers are kept (see adapterkit.CheckSize)
	if hn <= 4<<10 {
		hs = make(map[string]string, len(r.Headers))
		for _, h := range r.Headers {
			hs[h.Key] = string(h.Value)
		}
	}
	var id string
	for _, h := range r.Headers {
		if h.Key == eventkit.KafkaBinding.Prefix+"id" && len(h.Value) <= 256 {
			id = string(h.Value)
		}
	}
	return adapterkit.CheckSize(eventkit.KafkaBinding.Name+" binary", id, r.Value, hs, n, len(r.Headers), limit, "kafka Options.MaxMessageBytes")
}

// DecodeRecord decodes a record in CloudEvents binary mode (Kafka binding).
// A record that is not an event gives a *eventkit.DecodeError keeping its
// value and headers.
func DecodeRecord(r *kgo.Record) (eventkit.Event, error) {
	return eventkit.KafkaBinding.Decode(headerSeq(r.Headers), "", r.Value)
}

// headerSeq yields the record's headers with their values as strings, all
// copied into one allocation (a string per value was a third of the
// decode's cost).
func headerSeq(hs []kgo.RecordHeader) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		n := 0
		for _, h := range hs {
			n += len(h.Value)
		}
		var b strings.Builder
		b.Grow(n)
		for _, h := range hs {
			b.Write(h.Value)
		}
		all, off := b.String(), 0
		for _, h := range hs {
			v := all[off : off+len(h.Value)]
			off += len(h.Value)
			if !yield(h.Key, v) {
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
// After the partition was revoked (or lost) Ack returns ErrRevoked and
// commits nothing: the partition's next owner delivers the record again.
func (d *Delivery) Ack(ctx context.Context) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	return d.s.ack(d.st, d.e)
}

// Release implements broker.Releaser, for a consumer that is stopping: the
// record is left unsettled and stops counting as in flight, so Close does
// not wait for it and commits the offsets before it; the partition's next
// owner (this member after a restart) reads it again from there, in order,
// without counting an attempt for it. Should this member keep the
// partition until the record's ack wait runs out, the record goes to the
// retry topic as an expired delivery does.
func (d *Delivery) Release(ctx context.Context) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	d.s.release(d.st, d.e)
	return nil
}

// Context is cancelled when the delivery's partition is revoked or lost (or
// the subscription is released): from then on the delivery is no longer
// this member's to settle. It is the context the handler is called with.
func (d *Delivery) Context() context.Context { return d.st.ctx }

// Term settles the delivery for good (like Ack: Kafka has no other way to
// drop a record).
func (d *Delivery) Term(ctx context.Context) error { return d.Ack(ctx) }

// Nack produces the record to the group's retry topic, due after delay and
// with the next attempt number, and then settles this delivery. If the
// produce fails, Nack returns the error and the record is retried when its
// ack wait runs out. While the partition is being revoked, or after, Nack
// produces nothing: the next owner reads the record again.
func (d *Delivery) Nack(ctx context.Context, delay time.Duration) error {
	if !d.Claim() {
		return broker.ErrAlreadySettled
	}
	return d.s.nack(ctx, d.st, d.e, delay)
}
