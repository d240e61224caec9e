package deadletter

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/eventkit/eventkit"
)

// The extension attributes a dead letter carries. All start with "dlq", so
// Original can strip them.
const (
	ExtTopic        = "dlqtopic"        // the topic the event was consumed from
	ExtGroup        = "dlqgroup"        // the consumer group that gave up
	ExtAttempts     = "dlqattempts"     // attempts made, decimal
	ExtFirstFailure = "dlqfirstfailure" // RFC 3339 time of the first failure seen
	ExtLastFailure  = "dlqlastfailure"  // RFC 3339 time of the last failure
	ExtError        = "dlqerror"        // the last error's text (at most 1000 bytes)
	ExtReason       = "dlqreason"       // ReasonMaxAttempts, ReasonPermanent or ReasonUndecodable
	ExtHeaders      = "dlqheaders"      // undecodable only: the message headers as a JSON object
	ExtEventID      = "dlqeventid"      // the original event's id (the dead letter has an id of its own)
	// ExtParked marks the dead letter of an event that parked its subject
	// (consumer.Strict): the subject's sequence number it is parked
	// at, decimal. sqldeadletter's Unpark and Skip resume the subject.
	ExtParked = "dlqparked"
)

// The extension attributes of a replayed event (see Replay). They do not
// start with "dlq": a replay is the original event, not a dead letter.
const (
	ExtReplayOf    = "replayof"    // the original event's id (the replay has an id of its own)
	ExtReplayGroup = "replaygroup" // the only consumer group that handles the replay
)

// Why an event was dead-lettered.
const (
	ReasonMaxAttempts = "max-attempts" // every attempt failed
	ReasonPermanent   = "permanent"    // the handler returned a permanent error (eventkit.Permanent)
	ReasonUndecodable = "undecodable"  // the message was not a valid event
	ReasonNoRoute     = "no-route"     // the Router had no route for the event type
)

// UndecodableType is the type of the dead letter made for a message that was
// not a valid event. Its Data is the message's raw bytes, its content type
// application/octet-stream, and ExtError says why it could not be decoded.
const UndecodableType = "eventkit.undecodable"

// Info describes a dead-letter event (see InfoOf).
type Info struct {
	// EventID is the original event's id. The dead letter itself has an id
	// of its own, so that a broker's deduplication by message id (JetStream's
	// Nats-Msg-Id) cannot drop it as a copy of the original or of another
	// group's dead letter.
	EventID      string
	Topic        string // original topic
	Group        string // consumer group
	Attempts     int
	FirstFailure time.Time
	LastFailure  time.Time
	Error        string
	Reason       string
	// Undecodable is true when the dead letter holds raw bytes (Type
	// UndecodableType) rather than the original event; Headers then has the
	// original message headers.
	Undecodable bool
	Headers     map[string]string
}

// InfoOf reads the dead-letter attributes of ev. ok is false when ev
// is not a dead letter.
func InfoOf(ev eventkit.Event) (dl Info, ok bool) {
	if _, ok := ev.Extensions[ExtTopic]; !ok {
		return Info{}, false
	}
	dl = Info{
		Topic:       ev.Extensions[ExtTopic],
		Group:       ev.Extensions[ExtGroup],
		Error:       ev.Extensions[ExtError],
		Reason:      ev.Extensions[ExtReason],
		Undecodable: ev.Type == UndecodableType,
		EventID:     ev.ID,
	}
	if id := ev.Extensions[ExtEventID]; id != "" && !dl.Undecodable {
		dl.EventID = id
	}
	dl.Attempts, _ = strconv.Atoi(ev.Extensions[ExtAttempts])
	dl.FirstFailure, _ = time.Parse(time.RFC3339Nano, ev.Extensions[ExtFirstFailure])
	dl.LastFailure, _ = time.Parse(time.RFC3339Nano, ev.Extensions[ExtLastFailure])
	if h := ev.Extensions[ExtHeaders]; h != "" {
		_ = json.Unmarshal([]byte(h), &dl.Headers)
	}
	return dl, true
}

// Original returns the event a dead letter was made from: a copy of ev with
// the original event id and without the dlq* extensions. For an undecodable
// dead letter there is no original event; it returns the copy all the same.
func Original(ev eventkit.Event) eventkit.Event {
	out := ev.Clone()
	if id := out.Extensions[ExtEventID]; id != "" && out.Type != UndecodableType {
		out.ID = id
	}
	for k := range out.Extensions {
		if strings.HasPrefix(k, "dlq") {
			delete(out.Extensions, k)
		}
	}
	if len(out.Extensions) == 0 {
		out.Extensions = nil
	}
	return out
}

// Failure is what the runtime knows about a failed event.
type Failure struct {
	Reason   string
	Attempts int
	First    time.Time
	Last     time.Time
	Err      error
}

// Of builds the dead letter of ev: ev with an id of its own, the original
// id in ExtEventID and the failure's attributes.
func Of(ev eventkit.Event, topic, group string, f Failure) eventkit.Event {
	dl := Original(ev)
	if dl.Extensions == nil {
		dl.Extensions = make(map[string]string, 8)
	}
	dl.Extensions[ExtEventID] = dl.ID
	dl.ID = eventkit.NewID()
	setFailure(dl.Extensions, topic, group, f)
	return dl
}

// Replay builds the replay of dead letter dl: the original event with an id
// of its own (so that a broker's deduplication by message id cannot drop it
// as a copy of the original), the original id in ExtReplayOf and the group
// that gave up in ExtReplayGroup. The consumer runtime gives the replay back
// its original id before the inbox and the handler see it, and only the
// named group handles it; other groups of the topic ack it unseen.
func Replay(dl eventkit.Event) eventkit.Event {
	group := dl.Extensions[ExtGroup]
	ev := Original(dl)
	if ev.Extensions == nil {
		ev.Extensions = make(map[string]string, 2)
	}
	ev.Extensions[ExtReplayOf] = ev.ID
	if group != "" {
		ev.Extensions[ExtReplayGroup] = group
	}
	ev.ID = eventkit.NewID()
	return ev
}

// Unreplay undoes Replay for the consumer of group: it returns ev with its
// original id and without the replay attributes, and skip=true when the
// replay is meant for another group. An event that is not a replay is
// returned as it is.
func Unreplay(ev eventkit.Event, group string) (out eventkit.Event, skip bool) {
	orig, ok := ev.Extensions[ExtReplayOf]
	if !ok {
		return ev, false
	}
	if g := ev.Extensions[ExtReplayGroup]; g != "" && g != group {
		return ev, true
	}
	out = ev.Clone()
	if orig != "" {
		out.ID = orig
	}
	delete(out.Extensions, ExtReplayOf)
	delete(out.Extensions, ExtReplayGroup)
	if len(out.Extensions) == 0 {
		out.Extensions = nil
	}
	return out, false
}

func setFailure(ext map[string]string, topic, group string, f Failure) {
	ext[ExtTopic] = topic
	ext[ExtGroup] = group
	ext[ExtAttempts] = strconv.Itoa(f.Attempts)
	ext[ExtFirstFailure] = f.First.UTC().Format(time.RFC3339Nano)
	ext[ExtLastFailure] = f.Last.UTC().Format(time.RFC3339Nano)
	ext[ExtReason] = f.Reason
	msg := "unknown error"
	if f.Err != nil {
		msg = f.Err.Error()
	}
	ext[ExtError] = cleanText(msg, 1000)
}

// Undecodable builds the dead letter of a message that is not an event: raw
// bytes as data, the reason and headers as extensions.
func Undecodable(raw []byte, headers map[string]string, topic, group string, f Failure) eventkit.Event {
	ev := eventkit.New(UndecodableType, "application/octet-stream", append([]byte(nil), raw...),
		eventkit.WithSource("eventkit/consumer/"+group))
	ev.DataVersion = ""
	ev.Extensions = make(map[string]string, 8)
	setFailure(ev.Extensions, topic, group, f)
	if len(headers) > 0 {
		if b, err := json.Marshal(headers); err == nil {
			ev.Extensions[ExtHeaders] = cleanText(string(b), 16<<10)
		}
	}
	return ev
}

// cleanText makes s a valid extension value: valid UTF-8, no control
// characters, at most max bytes.
func cleanText(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}
