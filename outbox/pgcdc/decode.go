package pgcdc

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/internal/sqlutil"
)

// ErrProtocol is wrapped by every error about a replication message that
// cannot be parsed (a truncated or malformed pgoutput message). The relay
// reconnects when it sees one.
var ErrProtocol = errors.New("pgcdc: malformed replication message")

// This file decodes the few pgoutput (protocol version 1) messages the relay
// needs: Begin, Commit, Relation and Insert. pglogrepl's own decoders index
// their input without bounds checks and panic on a truncated message; these
// return an error wrapping ErrProtocol instead (see FuzzDecodeMessage).

type beginMsg struct {
	finalLSN   pglogrepl.LSN
	commitTime time.Time
	xid        uint32
}

type commitMsg struct {
	commitLSN, endLSN pglogrepl.LSN
	commitTime        time.Time
}

type relationMsg struct {
	id        uint32
	namespace string
	name      string
	columns   []string
}

type insertMsg struct {
	relID uint32
	cols  []column
}

// column is one value of a tuple. kind is 'n' (null), 'u' (unchanged
// toasted value, never sent for inserts), 't' (text) or 'b' (binary).
type column struct {
	kind byte
	data []byte
}

// otherMsg is any message the relay ignores (Type, Origin, Update, Delete,
// Truncate, logical decoding messages).
type otherMsg struct{ kind byte }

type reader struct {
	b   []byte
	off int
	err error
	msg string
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s: %s at offset %d of %d", ErrProtocol, r.msg, what, r.off, len(r.b))
	}
}

func (r *reader) need(n int, what string) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || len(r.b)-r.off < n {
		r.fail("truncated " + what)
		return false
	}
	return true
}

func (r *reader) u8(what string) byte {
	if !r.need(1, what) {
		return 0
	}
	v := r.b[r.off]
	r.off++
	return v
}

func (r *reader) u16(what string) uint16 {
	if !r.need(2, what) {
		return 0
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v
}

func (r *reader) u32(what string) uint32 {
	if !r.need(4, what) {
		return 0
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) u64(what string) uint64 {
	if !r.need(8, what) {
		return 0
	}
	v := binary.BigEndian.Uint64(r.b[r.off:])
	r.off += 8
	return v
}

func (r *reader) str(what string) string {
	if r.err != nil {
		return ""
	}
	for i := r.off; i < len(r.b); i++ {
		if r.b[i] == 0 {
			s := string(r.b[r.off:i])
			r.off = i + 1
			return s
		}
	}
	r.fail("unterminated " + what)
	return ""
}

func (r *reader) bytes(n int, what string) []byte {
	if !r.need(n, what) {
		return nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

// pgEpoch is the PostgreSQL epoch (2000-01-01 UTC).
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func pgTime(us uint64) time.Time { return pgEpoch.Add(time.Duration(int64(us)) * time.Microsecond) }

// decodeMessage decodes one pgoutput message (the WALData of an XLogData).
// Values of an Insert alias data.
func decodeMessage(data []byte) (any, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrProtocol)
	}
	r := &reader{b: data, off: 1}
	switch data[0] {
	case 'B':
		r.msg = "Begin"
		m := beginMsg{finalLSN: pglogrepl.LSN(r.u64("final lsn")), commitTime: pgTime(r.u64("commit time")), xid: r.u32("xid")}
		return m, r.err
	case 'C':
		r.msg = "Commit"
		r.u8("flags")
		m := commitMsg{commitLSN: pglogrepl.LSN(r.u64("commit lsn")), endLSN: pglogrepl.LSN(r.u64("end lsn")), commitTime: pgTime(r.u64("commit time"))}
		return m, r.err
	case 'R':
		r.msg = "Relation"
		m := relationMsg{id: r.u32("relation id"), namespace: r.str("namespace"), name: r.str("name")}
		r.u8("replica identity")
		n := int(r.u16("column count"))
		if r.err != nil {
			return nil, r.err
		}
		if n > len(data) { // each column takes at least 10 bytes
			r.fail("column count " + strconv.Itoa(n))
			return nil, r.err
		}
		m.columns = make([]string, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			r.u8("column flags")
			m.columns = append(m.columns, r.str("column name"))
			r.u32("column type")
			r.u32("column type modifier")
		}
		if r.err != nil {
			return nil, r.err
		}
		return m, nil
	case 'I':
		r.msg = "Insert"
		m := insertMsg{relID: r.u32("relation id")}
		if k := r.u8("tuple kind"); r.err == nil && k != 'N' {
			r.fail(fmt.Sprintf("tuple kind %q, want 'N'", k))
		}
		n := int(r.u16("column count"))
		if r.err != nil {
			return nil, r.err
		}
		if n > len(data) {
			r.fail("column count " + strconv.Itoa(n))
			return nil, r.err
		}
		m.cols = make([]column, n)
		for i := range m.cols {
			c := &m.cols[i]
			c.kind = r.u8("column kind")
			switch c.kind {
			case 't', 'b':
				l := r.u32("column length")
				if l > uint32(len(data)) {
					r.fail("column length " + strconv.FormatUint(uint64(l), 10))
					return nil, r.err
				}
				c.data = r.bytes(int(l), "column value")
			case 'n', 'u':
			default:
				r.fail(fmt.Sprintf("column kind %q", c.kind))
			}
			if r.err != nil {
				return nil, r.err
			}
		}
		return m, nil
	default:
		return otherMsg{kind: data[0]}, nil
	}
}

// relation is the relay's view of the outbox table as announced by a
// Relation message: where each column it needs is in a tuple.
type relation struct {
	ours bool // the outbox table (other tables in the publication are ignored)
	ncol int
	ix   [numFields]int
}

const (
	fSeq = iota
	fTopic
	fID
	fType
	fSource
	fSubject
	fEventTime
	fDataVersion
	fDataContentType
	fDataSchema
	fExtensions
	fData
	fCreatedAt
	fAttempts
	numFields
)

var fieldNames = [numFields]string{"seq", "topic", "id", "type", "source", "subject", "event_time",
	"data_version", "data_content_type", "data_schema", "extensions", "data", "created_at", "attempts"}

// required fields; the others default to zero values when absent.
var required = [...]int{fSeq, fTopic, fID, fType, fSource, fEventTime}

// newRelation maps a Relation message onto the outbox columns. ours says
// whether it names the outbox table (schema "" matches any schema).
func newRelation(m relationMsg, schema, base string) (*relation, error) {
	rel := &relation{ncol: len(m.columns)}
	if !strings.EqualFold(m.name, base) || (schema != "" && !strings.EqualFold(m.namespace, schema)) {
		return rel, nil
	}
	rel.ours = true
	for i := range rel.ix {
		rel.ix[i] = -1
	}
	for i, name := range m.columns {
		for f, fn := range fieldNames {
			if name == fn {
				rel.ix[f] = i
			}
		}
	}
	for _, f := range required {
		if rel.ix[f] < 0 {
			return nil, fmt.Errorf("pgcdc: table %s.%s has no column %q: is it an eventkit outbox table?", m.namespace, m.name, fieldNames[f])
		}
	}
	return rel, nil
}

// decodeRow turns the tuple of an Insert into an outbox record. Values may
// be in text or in binary (send) format. Errors wrap eventkit.ErrDecode (a
// *eventkit.DecodeError keeping the raw tuple); the record's Seq is set if
// it could be read, so that the row can be parked.
func decodeRow(rel *relation, cols []column) (outbox.Record, error) {
	var rec outbox.Record
	if len(cols) != rel.ncol {
		return rec, rowErr(cols, fmt.Errorf("tuple has %d columns, relation %d", len(cols), rel.ncol))
	}
	var firstErr error
	val := func(f int) (column, bool) {
		i := rel.ix[f]
		if i < 0 {
			return column{}, false
		}
		c := cols[i]
		switch c.kind {
		case 't', 'b':
			return c, true
		case 'n':
			return c, false
		default:
			if firstErr == nil {
				firstErr = fmt.Errorf("column %s: unexpected value kind %q", fieldNames[f], c.kind)
			}
			return c, false
		}
	}
	str := func(f int) string {
		c, ok := val(f)
		if !ok {
			return ""
		}
		return string(c.data) // text and binary format are the same for text
	}
	integer := func(f int) (int64, error) {
		c, ok := val(f)
		if !ok {
			return 0, fmt.Errorf("column %s is null", fieldNames[f])
		}
		if c.kind == 't' {
			return strconv.ParseInt(string(c.data), 10, 64)
		}
		switch len(c.data) {
		case 8:
			return int64(binary.BigEndian.Uint64(c.data)), nil
		case 4:
			return int64(int32(binary.BigEndian.Uint32(c.data))), nil
		}
		return 0, fmt.Errorf("column %s: %d-byte binary integer", fieldNames[f], len(c.data))
	}
	seq, err := integer(fSeq)
	if err != nil {
		return rec, rowErr(cols, fmt.Errorf("column seq: %w", err))
	}
	rec.Seq = seq
	rec.Topic = str(fTopic)
	e := &rec.Event
	e.ID, e.Type, e.Source, e.Subject = str(fID), str(fType), str(fSource), str(fSubject)
	e.DataVersion, e.DataContentType, e.DataSchema = str(fDataVersion), str(fDataContentType), str(fDataSchema)
	if e.Time, err = sqlutil.ParseTime(str(fEventTime)); err != nil {
		return rec, rowErr(cols, err)
	}
	if c, ok := val(fExtensions); ok {
		js := c.data
		if c.kind == 'b' { // jsonb send format: version byte 1, then the text
			if len(js) == 0 || js[0] != 1 {
				return rec, rowErr(cols, fmt.Errorf("column extensions: unknown jsonb format"))
			}
			js = js[1:]
		}
		s := string(js)
		if e.Extensions, err = sqlutil.ParseExt(&s); err != nil {
			return rec, rowErr(cols, err)
		}
	}
	if c, ok := val(fData); ok {
		if c.kind == 'b' {
			e.Data = append(make([]byte, 0, len(c.data)), c.data...)
		} else if e.Data, err = decodeBytea(c.data); err != nil {
			return rec, rowErr(cols, fmt.Errorf("column data: %w", err))
		}
	}
	if c, ok := val(fCreatedAt); ok { // informational only: errors ignored
		if c.kind == 'b' && len(c.data) == 8 {
			rec.CreatedAt = pgTime(binary.BigEndian.Uint64(c.data))
		} else if c.kind == 't' {
			rec.CreatedAt, _ = parseTimestamptz(string(c.data))
		}
	}
	if _, ok := val(fAttempts); ok {
		n, _ := integer(fAttempts)
		rec.Attempts = int(n)
	}
	if firstErr != nil {
		return rec, rowErr(cols, firstErr)
	}
	// Columns that decode but do not form a valid event (a row written by
	// another tool): parked with the reason, never offered to the broker.
	return rec, outbox.CheckRecord(&rec)
}

func rowErr(cols []column, err error) error {
	var raw []byte
	for _, c := range cols {
		raw = append(raw, c.data...)
		raw = append(raw, 0)
	}
	return &eventkit.DecodeError{Format: "pgoutput outbox row", Raw: raw, Err: err}
}

// decodeBytea decodes bytea in the hex output format (the relay sets
// bytea_output=hex on its replication connection).
func decodeBytea(s []byte) ([]byte, error) {
	if len(s) < 2 || s[0] != '\\' || s[1] != 'x' {
		return nil, fmt.Errorf("bytea value not in hex format")
	}
	b := make([]byte, hex.DecodedLen(len(s)-2))
	if _, err := hex.Decode(b, s[2:]); err != nil {
		return nil, err
	}
	return b, nil
}

// parseTimestamptz parses timestamptz text output with DateStyle ISO.
func parseTimestamptz(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999999-07", "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999-07:00:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("bad timestamp %q", s)
}
