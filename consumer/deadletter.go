package consumer

import (
	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/consumer/internal/dlq"
)

// The extension attributes a dead letter carries. All start with "dlq", so
// Original can strip them.
const (
	ExtDLQTopic        = dlq.ExtDLQTopic        // the topic the event was consumed from
	ExtDLQGroup        = dlq.ExtDLQGroup        // the consumer group that gave up
	ExtDLQAttempts     = dlq.ExtDLQAttempts     // attempts made, decimal
	ExtDLQFirstFailure = dlq.ExtDLQFirstFailure // RFC 3339 time of the first failure seen
	ExtDLQLastFailure  = dlq.ExtDLQLastFailure  // RFC 3339 time of the last failure
	ExtDLQError        = dlq.ExtDLQError        // the last error's text (at most 1000 bytes)
	ExtDLQReason       = dlq.ExtDLQReason       // ReasonMaxAttempts, ReasonPermanent or ReasonUndecodable
	ExtDLQHeaders      = dlq.ExtDLQHeaders      // undecodable only: the message headers as a JSON object
)

// Why an event was dead-lettered.
const (
	ReasonMaxAttempts = dlq.ReasonMaxAttempts // every attempt failed
	ReasonPermanent   = dlq.ReasonPermanent   // the handler returned a permanent error (eventkit.Permanent)
	ReasonUndecodable = dlq.ReasonUndecodable // the message was not a valid event
)

// UndecodableType is the type of the dead letter made for a message that was
// not a valid event. Its Data is the message's raw bytes, its content type
// application/octet-stream, and ExtDLQError says why it could not be decoded.
const UndecodableType = dlq.UndecodableType

// DeadLetter describes a dead-letter event (see DeadLetterInfo): the original
// Topic and Group, Attempts, FirstFailure and LastFailure, the Error text and
// the Reason; Undecodable (with the original Headers) when the dead letter
// holds raw bytes rather than the original event.
type DeadLetter = dlq.DeadLetter

// DeadLetterInfo reads the dead-letter attributes of ev. ok is false when ev
// is not a dead letter.
func DeadLetterInfo(ev eventkit.Event) (dl DeadLetter, ok bool) { return dlq.DeadLetterInfo(ev) }

// Original returns the event a dead letter was made from: a copy of ev
// without the dlq* extensions, ready to be republished to DeadLetter.Topic
// (replay). For an undecodable dead letter there is no original event; it
// returns the copy all the same.
func Original(ev eventkit.Event) eventkit.Event { return dlq.Original(ev) }
