// Package shop holds the business logic of the three example services,
// orders, inventory and notifications, which the programs in examples/ run
// as separate processes and `eventkit demo` runs in one. Each service owns
// its database; they talk only through events written to their outboxes
// and consumed idempotently, so that every order is confirmed (stock
// reserved once, notified once) or cancelled (notified once) and stock never
// goes below zero, whatever faults `eventkit demo` injects (it checks this
// at the end). It is example code: public so that an example directory
// copied out of this repository still builds.
//
//   - orders places an order and writes order.created (Protobuf) to its
//     outbox in the same transaction; when inventory rejects the order it
//     cancels it (compare-and-swap on the order's version) and emits
//     order.cancelled, the compensating event; when inventory reserves the
//     stock it confirms the order.
//   - inventory reserves stock with compare-and-swap on the stock row's
//     version (never below zero) and emits inventory.reserved or
//     inventory.rejected.
//   - notifications records exactly one notification per order (an UPSERT
//     keyed by order id): "confirmed" on inventory.reserved, "cancelled" on
//     order.cancelled.
package shop

import (
	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/eventkitpb/examplepb"
)

// Topics names the demo's two topics.
type Topics struct {
	Orders    string // order.created, order.cancelled
	Inventory string // inventory.reserved, inventory.rejected
}

// DefaultTopics are the topics the example programs use.
var DefaultTopics = Topics{Orders: "demo.orders", Inventory: "demo.inventory"}

// OutboxTable is the outbox table of a service.
func OutboxTable(service string) string { return "demo_" + service + "_outbox" }

// InboxTable is the inbox table of a service.
func InboxTable(service string) string { return "demo_" + service + "_inbox" }

// Event types of the demo.
const (
	TypeOrderCreated      = "order.created"
	TypeOrderCancelled    = "order.cancelled"
	TypeInventoryReserved = "inventory.reserved"
	TypeInventoryRejected = "inventory.rejected"
)

// InventoryReserved says stock was set aside for an order. Self-explanatory:
// it names the product and the quantity, not only ids.
type InventoryReserved struct {
	OrderID        string `json:"order_id"`
	SKU            string `json:"product_sku"`
	ProductName    string `json:"product_name"`
	Quantity       int    `json:"quantity"`
	RemainingStock int    `json:"remaining_stock"`
}

// InventoryRejected says an order could not be served.
type InventoryRejected struct {
	OrderID     string `json:"order_id"`
	SKU         string `json:"product_sku"`
	ProductName string `json:"product_name"`
	Requested   int    `json:"requested"`
	Available   int    `json:"available"`
	Reason      string `json:"reason"`
}

// OrderCancelled is the compensating event of a rejected order.
type OrderCancelled struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Reason     string `json:"reason"`
}

// NewRegistry registers the demo's event types: order.created in Protobuf,
// the others in JSON.
func NewRegistry() *eventkit.Registry {
	r := eventkit.NewRegistry()
	eventkit.MustRegister[*examplepb.OrderCreated](r, TypeOrderCreated, "1", eventkit.Protobuf)
	eventkit.MustRegister[OrderCancelled](r, TypeOrderCancelled, "1", eventkit.JSON)
	eventkit.MustRegister[InventoryReserved](r, TypeInventoryReserved, "1", eventkit.JSON)
	eventkit.MustRegister[InventoryRejected](r, TypeInventoryRejected, "1", eventkit.JSON)
	return r
}
