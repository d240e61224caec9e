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
	ExtDLQEventID      = dlq.ExtDLQEventID      // the original event's id; the dead letter has an id of its own
)

// The extension attributes of a replayed event (see Replay).
const (
	ExtReplayOf    = dlq.ExtReplayOf    // the original event's id; the replay has an id of its own
	ExtReplayGroup = dlq.ExtReplayGroup // the only consumer group that handles the replay
)

// Why an event was dead-lettered.
const (
	ReasonMaxAttempts = dlq.ReasonMaxAttempts // every attempt failed
	ReasonPermanent   = dlq.ReasonPermanent   // the handler returned a permanent error (eventkit.Permanent)
	ReasonUndecodable = dlq.ReasonUndecodable // the message was not a valid event
	ReasonNoRoute     = dlq.ReasonNoRoute     // the Router had no route for the event type (see ErrNoRoute)
)

// DefaultDeadLetterGroup is the group that Config.DeadLetterGroup defaults
// to, and the one deadletter.Collect uses by default.
const DefaultDeadLetterGroup = "eventkit-dlq-collector"

// UndecodableType is the type of the dead letter made for a message that was
// not a valid event. Its Data is the message's raw bytes, its content type
// application/octet-stream, and ExtDLQError says why it could not be decoded.
const UndecodableType = dlq.UndecodableType

// DeadLetter describes a dead-letter event (see DeadLetterInfo): the original
// EventID (a dead letter has an id of its own), Topic and Group, Attempts, FirstFailure and LastFailure, the Error text and
// the Reason; Undecodable (with the original Headers) when the dead letter
// holds raw bytes rather than the original event.
type DeadLetter = dlq.DeadLetter

// DeadLetterInfo reads the dead-letter attributes of ev. ok is false when ev
// is not a dead letter.
func DeadLetterInfo(ev eventkit.Event) (dl DeadLetter, ok bool) { return dlq.DeadLetterInfo(ev) }

// Original returns the event a dead letter was made from: a copy of ev with
// the original event id and without the dlq* extensions. For an undecodable
// dead letter there is no original event; it returns the copy all the same.
// To republish it use Replay, which keeps JetStream's deduplication from
// dropping it and sends it to the failing group only.
func Original(ev eventkit.Event) eventkit.Event { return dlq.Original(ev) }

// Replay returns the event to republish to DeadLetter.Topic to replay dead
// letter ev: the original event with an id of its own (ExtReplayOf keeps
// the original id) and ExtReplayGroup naming the group that gave up. The
// runtime hands that group's handler (and inbox) the event with its
// original id, so a replay of an event that was applied meanwhile is a
// duplicate without effect; every other group of the topic acks the
// replay without handling it.
func Replay(ev eventkit.Event) eventkit.Event { return dlq.Replay(ev) }
