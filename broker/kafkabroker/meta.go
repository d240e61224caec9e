package kafkabroker

import (
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Headers the adapter adds to records it moves to a retry topic.
const (
	// HeaderTopic is the topic the record was first published to.
	HeaderTopic = "eventkit-topic"
	// HeaderAttempt is the attempt number of the record's next delivery.
	HeaderAttempt = "eventkit-attempt"
	// HeaderDue is when the record may be redelivered, in Unix milliseconds.
	HeaderDue = "eventkit-due"
)

// retryInfo is what the retry headers of a record say.
type retryInfo struct {
	topic   string
	attempt int
	due     time.Time
}

// parseRetry reads the retry headers of a record from a retry topic. Missing
// or malformed headers give defaults: fallback topic, attempt 2 (the record
// is on a retry topic, so it was delivered before), due now.
func parseRetry(hs []kgo.RecordHeader, fallbackTopic string) retryInfo {
	ri := retryInfo{topic: fallbackTopic, attempt: 2}
	for _, h := range hs {
		switch h.Key {
		case HeaderTopic:
			if len(h.Value) > 0 && len(h.Value) <= 249 {
				ri.topic = string(h.Value)
			}
		case HeaderAttempt:
			if n, err := strconv.Atoi(string(h.Value)); err == nil && n >= 1 && n < 1<<30 {
				ri.attempt = n
			}
		case HeaderDue:
			if ms, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil && ms > 0 && ms < 1<<50 {
				ri.due = time.UnixMilli(ms)
			}
		}
	}
	return ri
}

// retryHeaders copies hs without the retry headers and appends new ones.
func retryHeaders(hs []kgo.RecordHeader, topic string, attempt int, due time.Time) []kgo.RecordHeader {
	out := make([]kgo.RecordHeader, 0, len(hs)+3)
	for _, h := range hs {
		switch h.Key {
		case HeaderTopic, HeaderAttempt, HeaderDue:
		default:
			out = append(out, h)
		}
	}
	return append(out,
		kgo.RecordHeader{Key: HeaderTopic, Value: []byte(topic)},
		kgo.RecordHeader{Key: HeaderAttempt, Value: strconv.AppendInt(nil, int64(attempt), 10)},
		kgo.RecordHeader{Key: HeaderDue, Value: strconv.AppendInt(nil, due.UnixMilli(), 10)},
	)
}

// commitMeta is what the adapter records in the metadata of an offset commit:
// every record of the partition from the committed offset up to Delivered
// (inclusive) may have been delivered already, at most Attempt times. A
// member that takes over the partition after a crash redelivers those records
// with attempt Attempt+1.
type commitMeta struct {
	Delivered int64 // -1: none
	Attempt   int
}

const metaPrefix = "eventkit1 "

func (m commitMeta) String() string {
	return metaPrefix + "d=" + strconv.FormatInt(m.Delivered, 10) + " a=" + strconv.Itoa(m.Attempt)
}

// parseMeta reads commit metadata written by String. Anything else
// (another client's metadata, garbage) gives ok=false.
func parseMeta(s string) (m commitMeta, ok bool) {
	rest, found := strings.CutPrefix(s, metaPrefix)
	if !found {
		return commitMeta{Delivered: -1}, false
	}
	m = commitMeta{Delivered: -1}
	var sawD, sawA bool
	for _, f := range strings.Fields(rest) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "d":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < -1 {
				return commitMeta{Delivered: -1}, false
			}
			m.Delivered, sawD = n, true
		case "a":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n >= 1<<30 {
				return commitMeta{Delivered: -1}, false
			}
			m.Attempt, sawA = n, true
		}
	}
	if !sawD || !sawA {
		return commitMeta{Delivered: -1}, false
	}
	return m, true
}
