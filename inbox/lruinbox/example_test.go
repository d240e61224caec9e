package lruinbox_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eventkit/eventkit/inbox"
	"github.com/eventkit/eventkit/inbox/lruinbox"
)

// The second delivery of an event is recognised and its handler not run; a
// failed handler records nothing, so the retry runs it again.
func Example() {
	in := lruinbox.New(lruinbox.Options{Size: 10000, TTL: 10 * time.Minute})
	ctx := context.Background()
	key := inbox.Key{Consumer: "billing", EventID: "evt-1", EventType: "order.created"}

	handle := func(fail bool) func(context.Context) error {
		return func(context.Context) error {
			if fail {
				fmt.Println("handler: fails")
				return errors.New("database down")
			}
			fmt.Println("handler: charges the customer")
			return nil
		}
	}
	fmt.Println("1:", in.Process(ctx, key, handle(true)))
	fmt.Println("2:", in.Process(ctx, key, handle(false)))
	err := in.Process(ctx, key, handle(false))
	fmt.Println("3:", err, errors.Is(err, inbox.ErrDuplicate))
	// Output:
	// handler: fails
	// 1: database down
	// handler: charges the customer
	// 2: <nil>
	// 3: inbox: event already processed true
}
