package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// TestPublishNamesTheRecordsThatFailed has the broker reject one partition
// of a call's records (kfake answers the produce requests: partition 0 with
// a non-retriable error, the others as stored) and checks that Publish names
// exactly the events that went to partition 0. ProduceSync reports results
// in completion order, not in the order of the records given, so reading
// them by position names the wrong events.
func TestPublishNamesTheRecordsThatFailed(t *testing.T) {
	c := newCluster(t, 1)
	b := newBroker(t, testOptions(c))
	closeAll(t, b)
	ctx := context.Background()
	topic := testenv.Name("attr")
	if err := b.EnsureTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		// Only this test's broker produces to this cluster.
		req := kr.(*kmsg.ProduceRequest)
		c.KeepControl()
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				if rp.Partition == 0 {
					sp.ErrorCode = kerr.InvalidRecord.Code
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	// Which partition each subject maps to, by the client's own partitioner.
	part := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
	for round := range 5 {
		evs := mkEvents(60, 12)
		want := map[int]bool{}
		for i, e := range evs {
			if part.Partition(Record(topic, e), int(b.opts.Partitions)) == 0 {
				want[i] = true
			}
		}
		if len(want) == 0 || len(want) == len(evs) {
			t.Fatalf("round %d: %d of %d events map to partition 0: pick other subjects", round, len(want), len(evs))
		}
		err := b.Publish(ctx, topic, evs...)
		var pe *broker.PublishError
		if !errors.As(err, &pe) {
			t.Fatalf("Publish = %v, want a *PublishError", err)
		}
		got := map[int]bool{}
		for _, f := range pe.Failed {
			got[f.Index] = true
			if f.ID != evs[f.Index].ID {
				t.Errorf("failed event %d named %s, want %s", f.Index, f.ID, evs[f.Index].ID)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: Publish named events %v as failed, the broker rejected %v", round, keys(got), keys(want))
		}
	}
}

func keys(m map[int]bool) []int {
	out := []int{}
	for i := range 1000 {
		if m[i] {
			out = append(out, i)
		}
	}
	return out
}
