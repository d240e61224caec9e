package consumer

import (
	"fmt"
	"time"

	"github.com/eventkit/eventkit/broker"
)

// RouteOption sets one route's own value of a Config setting (Handle,
// HandleFunc). Each route starts from the Config given to New, applies its
// options, and is then defaulted and validated as New does: derived
// defaults are recomputed for the route where the Config left them unset
// (MaxInFlight max(4*Concurrency, 32), AckWait HandlerTimeout + 30s), and
// an invalid option or combination makes Handle return the error. The
// consumer-wide settings (Inbox and its pruning, Logger, Metrics,
// TracerProvider, DeadLetterPublisher, DeadLetterGroup, ShutdownTimeout)
// have no route option.
type RouteOption func(*routeConfig)

// routeConfig is a route's Config while its options are applied.
type routeConfig struct {
	cfg Config // the consumer's Config as given to New (Mode normalised)
	dlq string // WithDeadLetterTopic
	err error  // the first invalid option
}

func (rc *routeConfig) fail(format string, args ...any) {
	if rc.err == nil {
		rc.err = fmt.Errorf("consumer: "+format, args...)
	}
}

// WithMode sets the route's Mode, replacing Config.Mode (or the deprecated
// fields) for this route only; Strict still needs a Config.Inbox that
// implements inbox.Sequencer, StrictBatched one that implements
// inbox.SequenceBatcher, and the other batched modes one that implements
// inbox.Batcher.
func WithMode(m Mode) RouteOption {
	return func(rc *routeConfig) { rc.cfg.Mode = m }
}

// WithConcurrency sets the route's number of workers (at least 1). Unless
// Config.MaxInFlight is set, the route's MaxInFlight default follows it.
func WithConcurrency(n int) RouteOption {
	return func(rc *routeConfig) {
		if n < 1 {
			rc.fail("WithConcurrency(%d): must be at least 1", n)
		}
		rc.cfg.Concurrency = n
	}
}

// WithMaxInFlight sets the route's bound of unsettled deliveries (see
// Config.MaxInFlight; at least the route's concurrency).
func WithMaxInFlight(n int) RouteOption {
	return func(rc *routeConfig) {
		if n < 1 {
			rc.fail("WithMaxInFlight(%d): must be at least 1", n)
		}
		rc.cfg.MaxInFlight = n
	}
}

// WithHandlerTimeout sets the route's bound of one handler call (> 0).
// Unless Config.AckWait is set, the route's AckWait default follows it.
func WithHandlerTimeout(d time.Duration) RouteOption {
	return func(rc *routeConfig) {
		if d <= 0 {
			rc.fail("WithHandlerTimeout(%s): must be positive", d)
		}
		rc.cfg.HandlerTimeout = d
	}
}

// WithRetry sets the route's retry policy, replacing Config.Retry as a
// whole: its zero fields take the defaults of RetryPolicy, not the values
// of Config.Retry.
func WithRetry(p RetryPolicy) RouteOption {
	return func(rc *routeConfig) { rc.cfg.Retry = p }
}

// WithDeadLetterTopic sends the route's dead letters to topic instead of
// Config.DeadLetterTopic(topic of the route). The topic must be a valid
// name other than the route's own topic. "" is refused: in
// Config.DeadLetterTopic "" means no dead letters (events that exhaust
// their attempts are dropped), which a route option should not turn on by
// an empty value; a route that must drop its failures can get "" from
// Config.DeadLetterTopic for its topic.
func WithDeadLetterTopic(topic string) RouteOption {
	return func(rc *routeConfig) {
		if err := broker.ValidateName("dead-letter topic", topic); err != nil {
			if rc.err == nil {
				rc.err = fmt.Errorf("consumer: WithDeadLetterTopic: %w", err)
			}
			return
		}
		rc.dlq = topic
		rc.cfg.DeadLetterTopic = func(string) string { return topic }
	}
}

// routeConfig returns the defaulted Config of a route of topic with opts.
func (c *Consumer) routeConfig(topic string, opts []RouteOption) (Config, error) {
	if len(opts) == 0 {
		return c.cfg, nil
	}
	rc := routeConfig{cfg: c.base}
	for _, o := range opts {
		if o != nil {
			o(&rc)
		}
	}
	if rc.err != nil {
		return Config{}, rc.err
	}
	if rc.dlq == topic {
		return Config{}, fmt.Errorf("consumer: WithDeadLetterTopic(%q): the route's own topic", rc.dlq)
	}
	cfg, err := rc.cfg.withDefaults(c.sub)
	if err != nil {
		return Config{}, err
	}
	// Consumer-wide: the values New settled on.
	cfg.Inbox, cfg.InboxRetention, cfg.InboxPruneInterval = c.cfg.Inbox, c.cfg.InboxRetention, c.cfg.InboxPruneInterval
	cfg.Logger, cfg.Metrics, cfg.TracerProvider = c.cfg.Logger, c.cfg.Metrics, c.cfg.TracerProvider
	cfg.DeadLetterPublisher, cfg.DeadLetterGroup = c.cfg.DeadLetterPublisher, c.cfg.DeadLetterGroup
	cfg.ShutdownTimeout = c.cfg.ShutdownTimeout
	return cfg, nil
}
