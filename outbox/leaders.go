package outbox

import (
	"context"
	"sort"
)

// Leadership is who leads which partition of a partitioned outbox, for
// operators (`eventkit outbox status`, `eventkit console`).
type Leadership struct {
	Count int `json:"count"`
	// Leaders maps each relay instance to the partitions it leads.
	Leaders map[string][]int `json:"leaders"`
	// Instances are the relays alive (standbys included), sorted.
	Instances []string `json:"instances"`
	// Standbys are the live instances that lead no partition, sorted.
	Standbys []string `json:"standbys,omitempty"`
	// Unled lists partitions no relay leads now.
	Unled []int `json:"unled,omitempty"`
}

// Leadership summarizes st: leaders, standbys and partitions without a
// leader.
func (st LeaseStatus) Leadership() Leadership {
	l := Leadership{Count: st.Partitions, Leaders: st.LeadersOf(), Instances: st.Instances}
	for _, ls := range st.Leases {
		if !ls.Held() {
			l.Unled = append(l.Unled, ls.Partition)
		}
	}
	for _, in := range st.Instances {
		if _, ok := l.Leaders[in]; !ok {
			l.Standbys = append(l.Standbys, in)
		}
	}
	for _, ps := range l.Leaders {
		sort.Ints(ps)
	}
	return l
}

// LeadershipOf reads the partition leases of store. It returns nil, with
// no error, when store is not Partitioned or its outbox has one partition
// (the relay then leads the whole outbox under the store's own lock).
func LeadershipOf(ctx context.Context, store Store) (*Leadership, error) {
	ps, ok := store.(Partitioned)
	if !ok {
		return nil, nil
	}
	ls, err := ps.Leases().List(ctx)
	if err != nil {
		return nil, err
	}
	if ls.Partitions <= 1 {
		return nil, nil
	}
	l := ls.Leadership()
	return &l, nil
}
