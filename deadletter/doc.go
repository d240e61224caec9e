// Package deadletter is the one home of dead letters: the format the
// consumer runtime publishes to "<topic>.dlq" when it gives up on an event,
// the replay that sends one back to the group that gave up, and the
// collector that stores them. A dead letter and a replay each carry an id
// of their own (the original id is kept in ExtEventID and ExtReplayOf), so a
// broker's deduplication by message id (JetStream's Nats-Msg-Id window)
// cannot drop a second group's dead letter of an event, nor a replay of an
// event seen within the window; Collect stores a dead letter before it
// acks it, so none is lost.
//
// Use: InfoOf reads a dead letter's attributes (topic, group, attempts,
// failure times, error, Reason); Original gives the event it was made
// from; Replay makes the event to republish to the original topic;
// Collect feeds a store such as sqldeadletter.Store. The consumer runtime
// builds dead letters with Of and Undecodable and undoes a replay with
// Unreplay, handing the handler and the inbox the original id, so an inbox
// drops a replay of an event that was applied meanwhile as a duplicate.
//
// Limits: the error text is cut to 1000 bytes and control characters are
// replaced; an undecodable message (not a valid event) becomes a dead letter
// of type UndecodableType holding the raw bytes and headers, which cannot be
// replayed.
package deadletter
