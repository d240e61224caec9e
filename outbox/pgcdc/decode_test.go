package pgcdc

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
)

// Encoders of pgoutput messages, for seeds and tests.

func encBegin(final uint64, xid uint32) []byte {
	b := []byte{'B'}
	b = binary.BigEndian.AppendUint64(b, final)
	b = binary.BigEndian.AppendUint64(b, 123456)
	return binary.BigEndian.AppendUint32(b, xid)
}

func encCommit(commit, end uint64) []byte {
	b := []byte{'C', 0}
	b = binary.BigEndian.AppendUint64(b, commit)
	b = binary.BigEndian.AppendUint64(b, end)
	return binary.BigEndian.AppendUint64(b, 123456)
}

func encRelation(id uint32, ns, name string, cols []string) []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(append(b, ns...), 0)
	b = append(append(b, name...), 0)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, 0)
		b = append(append(b, c...), 0)
		b = binary.BigEndian.AppendUint32(b, 25)
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	return b
}

// encInsert encodes a tuple in text format; a nil value is NULL.
func encInsert(rel uint32, vals []*string) []byte {
	bs := make([][]byte, len(vals))
	for i, v := range vals {
		if v != nil {
			bs[i] = []byte(*v) // not nil, even when empty
		}
	}
	return encTuple(rel, 't', bs)
}

func sp(s string) *string { return &s }

// encInsertBin encodes a tuple whose values are all in binary format.
func encInsertBin(rel uint32, vals [][]byte) []byte { return encTuple(rel, 'b', vals) }

// encTuple encodes an insert of vals, each in format ('t' text, 'b'
// binary); a nil value is NULL.
func encTuple(rel uint32, format byte, vals [][]byte) []byte {
	b := []byte{'I'}
	b = binary.BigEndian.AppendUint32(b, rel)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			b = append(b, 'n')
			continue
		}
		b = append(b, format)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

func validBinRow() [][]byte {
	created := binary.BigEndian.AppendUint64(nil, uint64(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Sub(pgEpoch).Microseconds()))
	return [][]byte{binary.BigEndian.AppendUint64(nil, 42), []byte("orders"), []byte("e-1"), []byte("order.created"), []byte("/orders"),
		[]byte("o-1"), []byte("2026-01-02T03:04:05.123456789Z"), []byte("1"), []byte("application/json"), []byte(""),
		append([]byte{1}, `{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}`...), {0, '{', '}', 0xff},
		created, binary.BigEndian.AppendUint32(nil, 3), nil, nil, nil}
}

func validRow() []*string {
	return []*string{sp("42"), sp("orders"), sp("e-1"), sp("order.created"), sp("/orders"), sp("o-1"),
		sp("2026-01-02T03:04:05.123456789Z"), sp("1"), sp("application/json"), nil,
		sp(`{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}`), sp(`\x7b7d`),
		sp("2026-01-02 03:04:05.123456+00"), sp("0"), nil, nil, nil}
}

var outboxCols = []string{"seq", "topic", "id", "type", "source", "subject", "event_time", "data_version",
	"data_content_type", "data_schema", "extensions", "data", "created_at", "attempts", "last_error", "delivered_at", "parked_at"}

func TestDecodeRow(t *testing.T) {
	m, err := decodeMessage(encRelation(7, "public", "ob", outboxCols))
	if err != nil {
		t.Fatal(err)
	}
	rel, err := newRelation(m.(relationMsg), "", "ob")
	if err != nil || !rel.ours {
		t.Fatalf("relation: %v %+v", err, rel)
	}
	im, err := decodeMessage(encInsert(7, validRow()))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decodeRow(rel, im.(insertMsg).cols)
	if err != nil {
		t.Fatal(err)
	}
	e := rec.Event
	if rec.Seq != 42 || rec.Topic != "orders" || e.ID != "e-1" || e.Subject != "o-1" || string(e.Data) != "{}" ||
		e.Time != time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC) || e.Extension("traceparent") == "" ||
		rec.CreatedAt.IsZero() || e.DataSchema != "" {
		t.Fatalf("decoded %+v", rec)
	}
	// The same row in binary format.
	im, err = decodeMessage(encInsertBin(7, validBinRow()))
	if err != nil {
		t.Fatal(err)
	}
	rec, err = decodeRow(rel, im.(insertMsg).cols)
	if err != nil {
		t.Fatal(err)
	}
	e = rec.Event
	if rec.Seq != 42 || rec.Attempts != 3 || e.ID != "e-1" || string(e.Data) != "\x00{}\xff" || e.Extension("traceparent") == "" ||
		rec.CreatedAt != time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) {
		t.Fatalf("decoded binary %+v", rec)
	}
	// A bad row is a DecodeError (the relay parks it), with its seq.
	row := validRow()
	row[6] = sp("yesterday")
	im, _ = decodeMessage(encInsert(7, row))
	rec, err = decodeRow(rel, im.(insertMsg).cols)
	if !errors.Is(err, eventkit.ErrDecode) || rec.Seq != 42 {
		t.Fatalf("bad time: %v (seq %d)", err, rec.Seq)
	}
	// Another table is not ours; a table without the columns is refused.
	if rel, err := newRelation(m.(relationMsg), "other", "ob"); err != nil || rel.ours {
		t.Fatalf("other schema: %v %+v", err, rel)
	}
	if _, err := newRelation(relationMsg{name: "ob", columns: []string{"seq"}}, "", "ob"); err == nil {
		t.Fatal("relation without the outbox columns accepted")
	}
	// Truncated messages are protocol errors, never panics.
	for _, msg := range [][]byte{encBegin(1, 2), encCommit(1, 2), encRelation(7, "public", "ob", outboxCols), encInsert(7, validRow())} {
		for i := 0; i < len(msg); i++ {
			if _, err := decodeMessage(msg[:i]); !errors.Is(err, ErrProtocol) {
				t.Fatalf("truncated %q at %d: %v", msg[0], i, err)
			}
		}
	}
}

// FuzzDecodeMessage: no input makes the decoders panic; errors are typed.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(encBegin(100, 7))
	f.Add(encCommit(100, 120))
	f.Add(encRelation(7, "public", "ob", outboxCols))
	f.Add(encInsert(7, validRow()))
	row := validRow()
	row[11] = sp(`\xZZ`)
	f.Add(encInsert(7, row))
	f.Add([]byte{'Y', 0, 0})
	f.Add(encInsertBin(7, validBinRow()))
	relMsg, _ := decodeMessage(encRelation(7, "public", "ob", outboxCols))
	rel, _ := newRelation(relMsg.(relationMsg), "", "ob")
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeMessage(data)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		switch m := m.(type) {
		case insertMsg:
			if _, err := decodeRow(rel, m.cols); err != nil && !errors.Is(err, eventkit.ErrDecode) {
				t.Fatalf("untyped row error %v", err)
			}
		case relationMsg:
			if r, err := newRelation(m, "", m.name); err == nil && r.ours {
				_ = r.ix
			}
		}
	})
}
