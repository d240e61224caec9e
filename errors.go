package eventkit

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidEvent is wrapped by every validation error (*ValidationError).
	ErrInvalidEvent = errors.New("eventkit: invalid event")
	// ErrTooLarge is wrapped when an event exceeds a size limit (*SizeError).
	ErrTooLarge = errors.New("eventkit: event too large")
	// ErrDecode is wrapped by every decoding failure (*DecodeError).
	ErrDecode = errors.New("eventkit: cannot decode event")
	// ErrUnknownType is returned when the registry has no entry for an event type.
	ErrUnknownType = errors.New("eventkit: unknown event type")
	// ErrUnsupportedVersion is returned when the registry knows the type but
	// not its data version.
	ErrUnsupportedVersion = errors.New("eventkit: unsupported event version")
)

// ValidationError says which field of an event is invalid and why.
// errors.Is(err, ErrInvalidEvent) is true for it.
type ValidationError struct {
	ID     string // the event id, if any
	Field  string // "id", "type", "source", "time", "extensions[name]", ...
	Reason string
}

func (e *ValidationError) Error() string {
	if e.ID != "" {
		return fmt.Sprintf("eventkit: invalid event %s: %s: %s", e.ID, e.Field, e.Reason)
	}
	return fmt.Sprintf("eventkit: invalid event: %s: %s", e.Field, e.Reason)
}

// Is reports whether target is ErrInvalidEvent.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidEvent }

// SizeError says that an event (or message) is over a limit, and names it.
// errors.Is(err, ErrTooLarge) and errors.Is(err, ErrInvalidEvent) are true for it.
type SizeError struct {
	ID    string
	Size  int
	Limit int
	// Where names the limit: "eventkit.MaxSize", "nats max_payload", ...
	Where string
}

func (e *SizeError) Error() string {
	return fmt.Sprintf("eventkit: event %s is %d bytes, over the limit of %d bytes (%s)", e.ID, e.Size, e.Limit, e.Where)
}

// Is reports whether target is ErrTooLarge or ErrInvalidEvent.
func (e *SizeError) Is(target error) bool { return target == ErrTooLarge || target == ErrInvalidEvent }

// DecodeError is returned when bytes from a broker or a store are not a valid
// event. Raw keeps the undecodable bytes (and Headers the message headers, if
// any) so that they can be dead-lettered with the reason. errors.Is(err,
// ErrDecode) is true for it.
type DecodeError struct {
	Format  string            // "cloudevents+json", "binary", "protobuf", ...
	Raw     []byte            // the payload as received
	Headers map[string]string // the message headers as received, if any
	Err     error             // the reason
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("eventkit: cannot decode %s event (%d bytes): %v", e.Format, len(e.Raw), e.Err)
}

// Unwrap returns the reason.
func (e *DecodeError) Unwrap() error { return e.Err }

// Is reports whether target is ErrDecode.
func (e *DecodeError) Is(target error) bool { return target == ErrDecode }

// PermanentError marks an error that retrying cannot fix (see Permanent).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that retry logic (the consumer runtime, the outbox
// relay) gives up at once instead of retrying. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err is, or wraps, a PermanentError, a
// DecodeError, or an invalid event: errors that retrying cannot fix.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p) || errors.Is(err, ErrDecode) || errors.Is(err, ErrInvalidEvent)
}
