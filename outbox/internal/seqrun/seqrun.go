// Package seqrun holds what the relay and the stores share about outbox
// sequence numbers.
package seqrun

// Consecutive reports whether seqs is a run of consecutive numbers in
// ascending order, so that the range from its first to its last holds
// exactly its elements.
func Consecutive(seqs []int64) bool {
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[0]+int64(i) {
			return false
		}
	}
	return true
}
