package sqlutil

import (
	"maps"
	"slices"
	"strconv"

	"github.com/eventkit/eventkit"
)

// StampSubjectSeq returns a copy of evs in which every event with a subject
// carries its position in its subject's sequence (the
// eventkit.SubjectSeqExtension extension), taken from counters in the
// caller's transaction: reserve(subject, n) must add n to the counter of
// (topic, subject), creating it at 0 if needed, and return the new value, in
// that transaction. The counter's row lock serialises the writers of one
// subject until they commit, and a rollback gives the numbers back, so a
// subject's sequence is gap-free in commit order. Subjects are reserved in
// sorted order so that two transactions writing the same subjects lock
// them in the same order. The caller's events are not modified.
func StampSubjectSeq(evs []eventkit.Event, reserve func(subject string, n int64) (last int64, err error)) ([]eventkit.Event, error) {
	count := map[string]int64{}
	for _, e := range evs {
		if e.Subject != "" {
			count[e.Subject]++
		}
	}
	if len(count) == 0 {
		return evs, nil
	}
	next := make(map[string]int64, len(count))
	for _, subj := range slices.Sorted(maps.Keys(count)) {
		last, err := reserve(subj, count[subj])
		if err != nil {
			return nil, err
		}
		next[subj] = last - count[subj] + 1
	}
	out := slices.Clone(evs)
	for i := range out {
		subj := out[i].Subject
		if subj == "" {
			continue
		}
		ext := maps.Clone(out[i].Extensions)
		if ext == nil {
			ext = make(map[string]string, 1)
		}
		ext[eventkit.SubjectSeqExtension] = strconv.FormatInt(next[subj], 10)
		next[subj]++
		out[i].Extensions = ext
	}
	return out, nil
}
