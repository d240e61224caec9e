package memorybroker

import "github.com/eventkit/eventkit"

// StoredMessage is one message a topic retains, as Messages returns it.
type StoredMessage struct {
	// Seq is the message's position in the topic's log, from 1.
	Seq   uint64
	Event eventkit.Event
	// DecodeErr is set for a message published raw that is not an event.
	DecodeErr error
}

// Messages returns a copy of the messages topic retains, in publish order,
// for inspection (eventkit audit). ok is false when no topic of that name
// was ever published to or subscribed to. It changes nothing.
func (b *Broker) Messages(topic string) (msgs []StoredMessage, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topics[topic]
	if t == nil {
		return nil, false
	}
	msgs = make([]StoredMessage, 0, len(t.log))
	for _, m := range t.log {
		msgs = append(msgs, StoredMessage{Seq: m.seq, Event: m.ev.Clone(), DecodeErr: m.decodeErr})
	}
	return msgs, true
}
