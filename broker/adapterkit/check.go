package adapterkit

import (
	"fmt"

	"github.com/eventkit/eventkit/broker"
)

// CheckProvision is the start of an adapter's Provision: the topic and
// group names are valid (broker.ValidateName) and the broker is not closed
// (broker.ErrClosed), in that order.
func CheckProvision(topic string, groups []string, closed bool) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	for _, g := range groups {
		if err := broker.ValidateName("group", g); err != nil {
			return err
		}
	}
	if closed {
		return broker.ErrClosed
	}
	return nil
}

// CheckSubscribe is the start of an adapter's Subscribe: the topic and group
// names are valid (broker.ValidateName) and h is not nil, in that order. The
// nil-handler error reads "<adapter>: nil handler".
func CheckSubscribe(topic, group string, h broker.Handler, adapter string) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	if err := broker.ValidateName("group", group); err != nil {
		return err
	}
	if h == nil {
		return fmt.Errorf("%s: nil handler", adapter)
	}
	return nil
}
