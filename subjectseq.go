package eventkit

import (
	"fmt"
	"strconv"
)

// SubjectSeqExtension is the CloudEvents extension attribute that carries an
// event's position in its subject's sequence: 1 for the first event of a
// (topic, subject), 2 for the next, and so on, gap-free in the order the
// producers' transactions committed. The SQL outbox stores stamp it in Add
// (overwriting any value the caller set); the consumer's strict order mode
// applies each subject's events in this order.
const SubjectSeqExtension = "subjectseq"

// SubjectSeq returns the event's subject sequence number (see
// SubjectSeqExtension). ok is false when the event carries none; err is set
// when it carries a value that is not a positive decimal integer.
func SubjectSeq(e Event) (seq int64, ok bool, err error) {
	s, ok := e.Extensions[SubjectSeqExtension]
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, true, fmt.Errorf("%w: extension %s=%q is not a positive integer", ErrInvalidEvent, SubjectSeqExtension, s)
	}
	return n, true, nil
}
