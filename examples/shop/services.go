package shop

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/eventkitpb/examplepb"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// Product is an item of the demo's catalogue.
type Product struct {
	SKU        string
	Name       string
	PriceCents int64
}

// Catalogue is what the demo sells.
var Catalogue = []Product{
	{"SKU-ESPRESSO", "Espresso machine", 24900},
	{"SKU-GRINDER", "Burr grinder", 8900},
	{"SKU-KETTLE", "Gooseneck kettle", 4500},
	{"SKU-SCALE", "Coffee scale", 2900},
}

// Orders is the orders service.
type Orders struct {
	DB     DB
	Topics Topics
	Outbox Outbox
	Reg    *eventkit.Registry
}

// Migrate creates the orders tables and the catalogue.
func (o *Orders) Migrate(ctx context.Context) error {
	err := o.DB.execAll(ctx,
		`CREATE TABLE IF NOT EXISTS demo_products (sku VARCHAR(64) PRIMARY KEY, name VARCHAR(200) NOT NULL, price_cents BIGINT NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS demo_orders (id VARCHAR(64) PRIMARY KEY, customer_id VARCHAR(64) NOT NULL, sku VARCHAR(64) NOT NULL,
			quantity INT NOT NULL, unit_price_cents BIGINT NOT NULL, status VARCHAR(16) NOT NULL, version INT NOT NULL)`)
	if err != nil {
		return err
	}
	for _, p := range Catalogue {
		_, err := o.DB.ExecContext(ctx, o.DB.Q(`INSERT INTO demo_products (sku, name, price_cents) VALUES (?, ?, ?)`+
			o.DB.upsert("sku", "name = "+o.excluded("name")+", price_cents = "+o.excluded("price_cents"))), p.SKU, p.Name, p.PriceCents)
		if err != nil {
			return err
		}
	}
	return nil
}

func (o *Orders) excluded(col string) string { return o.DB.Dialect.Excluded(col) }

// Place records an order and its order.created event in one transaction.
// It never publishes: the relay does, after the commit.
func (o *Orders) Place(ctx context.Context, customerID, sku string, qty int) (string, error) {
	tx, err := o.DB.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	var name string
	var price int64
	if err := tx.QueryRowContext(ctx, o.DB.Q(`SELECT name, price_cents FROM demo_products WHERE sku = ?`), sku).Scan(&name, &price); err != nil {
		return "", fmt.Errorf("product %s: %w", sku, err)
	}
	id := "ord-" + eventkit.NewID()
	if _, err := tx.ExecContext(ctx, o.DB.Q(`INSERT INTO demo_orders (id, customer_id, sku, quantity, unit_price_cents, status, version)
		VALUES (?, ?, ?, ?, ?, 'pending', 1)`), id, customerID, sku, qty, price); err != nil {
		return "", err
	}
	ev, err := eventkit.NewTyped(o.Reg, &examplepb.OrderCreated{
		OrderId: id, CustomerId: customerID, ProductSku: sku, ProductName: name,
		Quantity: int32(qty), UnitPriceCents: price, Currency: "EUR",
	}, eventkit.WithSubject(id), eventkit.WithSource("/demo/orders"))
	if err != nil {
		return "", err
	}
	if err := o.Outbox(ctx, tx, o.Topics.Orders, ev); err != nil {
		return "", err
	}
	return id, tx.Commit()
}

// OnInventory handles inventory.reserved (confirm the order) and
// inventory.rejected (cancel it and emit order.cancelled), with
// compare-and-swap on the order's version so a stale update changes nothing.
func (o *Orders) OnInventory(ctx context.Context, tx *sql.Tx, ev eventkit.Event) error {
	var orderID, status, reason string
	switch ev.Type {
	case TypeInventoryReserved:
		p, err := eventkit.Decode[InventoryReserved](o.Reg, ev)
		if err != nil {
			return err
		}
		orderID, status = p.OrderID, "confirmed"
	case TypeInventoryRejected:
		p, err := eventkit.Decode[InventoryRejected](o.Reg, ev)
		if err != nil {
			return err
		}
		orderID, status, reason = p.OrderID, "cancelled", p.Reason
	default:
		return nil
	}
	var version int
	var cur, customer string
	err := tx.QueryRowContext(ctx, o.DB.Q(`SELECT status, version, customer_id FROM demo_orders WHERE id = ?`+o.DB.forUpdate()), orderID).Scan(&cur, &version, &customer)
	if errors.Is(err, sql.ErrNoRows) {
		return eventkit.Permanent(fmt.Errorf("order %s does not exist", orderID))
	}
	if err != nil {
		return err
	}
	if cur != "pending" {
		return nil // already decided: nothing to do
	}
	res, err := tx.ExecContext(ctx, o.DB.Q(`UPDATE demo_orders SET status = ?, version = version + 1 WHERE id = ? AND version = ?`), status, orderID, version)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("order %s changed concurrently (version %d): retry", orderID, version)
	}
	if status != "cancelled" {
		return nil
	}
	cancel, err := eventkit.NewTyped(o.Reg, OrderCancelled{OrderID: orderID, CustomerID: customer, Reason: reason},
		eventkit.WithSubject(orderID), eventkit.WithSource("/demo/orders"),
		eventkit.WithExtension("causationid", ev.ID))
	if err != nil {
		return err
	}
	return o.Outbox(ctx, tx, o.Topics.Orders, cancel)
}

// Inventory is the inventory service.
type Inventory struct {
	DB     DB
	Topics Topics
	Outbox Outbox
	Reg    *eventkit.Registry
}

// Migrate creates the stock and reservation tables and stocks every product
// of the catalogue with stock units (only if the stock table is empty).
func (s *Inventory) Migrate(ctx context.Context, stock int) error {
	auto := "INTEGER PRIMARY KEY AUTOINCREMENT"
	switch s.DB.Dialect {
	case sqlinbox.Postgres:
		auto = "BIGSERIAL PRIMARY KEY"
	case sqlinbox.MySQL:
		auto = "BIGINT AUTO_INCREMENT PRIMARY KEY"
	}
	err := s.DB.execAll(ctx,
		`CREATE TABLE IF NOT EXISTS demo_stock (sku VARCHAR(64) PRIMARY KEY, name VARCHAR(200) NOT NULL,
			initial INT NOT NULL, available INT NOT NULL, version INT NOT NULL)`,
		// No unique key on order_id on purpose: a duplicate effect must be
		// visible to the verdict, not hidden by a constraint.
		`CREATE TABLE IF NOT EXISTS demo_reservations (id `+auto+`, order_id VARCHAR(64) NOT NULL,
			sku VARCHAR(64) NOT NULL, quantity INT NOT NULL, status VARCHAR(16) NOT NULL)`)
	if err != nil {
		return err
	}
	var n int
	if err := s.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM demo_stock`).Scan(&n); err != nil || n > 0 {
		return err
	}
	for _, p := range Catalogue {
		if _, err := s.DB.ExecContext(ctx, s.DB.Q(`INSERT INTO demo_stock (sku, name, initial, available, version) VALUES (?, ?, ?, ?, 1)`),
			p.SKU, p.Name, stock, stock); err != nil {
			return err
		}
	}
	return nil
}

// OnOrderCreated reserves stock for an order with compare-and-swap on the
// stock row's version, and emits inventory.reserved or inventory.rejected in
// the same transaction.
func (s *Inventory) OnOrderCreated(ctx context.Context, tx *sql.Tx, ev eventkit.Event) error {
	if ev.Type != TypeOrderCreated {
		return nil
	}
	oc, err := eventkit.Decode[*examplepb.OrderCreated](s.Reg, ev)
	if err != nil {
		return err
	}
	qty := int(oc.GetQuantity())
	if qty <= 0 {
		return eventkit.Permanent(fmt.Errorf("order %s: quantity %d is not positive", oc.GetOrderId(), qty))
	}
	var out eventkit.Event
	for tries := 0; ; tries++ {
		var available, version int
		// A locking read on Postgres and MySQL: under MySQL's REPEATABLE READ
		// a plain read would see the transaction's old snapshot forever and
		// the compare-and-swap below could never succeed on a retry.
		err := tx.QueryRowContext(ctx, s.DB.Q(`SELECT available, version FROM demo_stock WHERE sku = ?`+s.DB.forUpdate()), oc.GetProductSku()).Scan(&available, &version)
		if errors.Is(err, sql.ErrNoRows) {
			return eventkit.Permanent(fmt.Errorf("order %s: unknown product %s", oc.GetOrderId(), oc.GetProductSku()))
		}
		if err != nil {
			return err
		}
		if available < qty {
			if _, err := tx.ExecContext(ctx, s.DB.Q(`INSERT INTO demo_reservations (order_id, sku, quantity, status) VALUES (?, ?, ?, 'rejected')`),
				oc.GetOrderId(), oc.GetProductSku(), qty); err != nil {
				return err
			}
			out, err = eventkit.NewTyped(s.Reg, InventoryRejected{OrderID: oc.GetOrderId(), SKU: oc.GetProductSku(), ProductName: oc.GetProductName(),
				Requested: qty, Available: available, Reason: fmt.Sprintf("only %d %s left", available, oc.GetProductName())},
				eventkit.WithSubject(oc.GetOrderId()), eventkit.WithSource("/demo/inventory"), eventkit.WithExtension("causationid", ev.ID))
			if err != nil {
				return err
			}
			break
		}
		res, err := tx.ExecContext(ctx, s.DB.Q(`UPDATE demo_stock SET available = available - ?, version = version + 1
			WHERE sku = ? AND version = ? AND available >= ?`), qty, oc.GetProductSku(), version, qty)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			if tries > 10 {
				return fmt.Errorf("stock of %s keeps changing: retry later", oc.GetProductSku())
			}
			continue // compare-and-swap lost: read again
		}
		if _, err := tx.ExecContext(ctx, s.DB.Q(`INSERT INTO demo_reservations (order_id, sku, quantity, status) VALUES (?, ?, ?, 'reserved')`),
			oc.GetOrderId(), oc.GetProductSku(), qty); err != nil {
			return err
		}
		out, err = eventkit.NewTyped(s.Reg, InventoryReserved{OrderID: oc.GetOrderId(), SKU: oc.GetProductSku(), ProductName: oc.GetProductName(),
			Quantity: qty, RemainingStock: available - qty},
			eventkit.WithSubject(oc.GetOrderId()), eventkit.WithSource("/demo/inventory"), eventkit.WithExtension("causationid", ev.ID))
		if err != nil {
			return err
		}
		break
	}
	return s.Outbox(ctx, tx, s.Topics.Inventory, out)
}

// Notifications is the notifications service.
type Notifications struct {
	DB  DB
	Reg *eventkit.Registry
}

// Migrate creates the notifications table.
func (n *Notifications) Migrate(ctx context.Context) error {
	return n.DB.execAll(ctx, `CREATE TABLE IF NOT EXISTS demo_notifications (order_id VARCHAR(64) PRIMARY KEY,
		kind VARCHAR(16) NOT NULL, message VARCHAR(400) NOT NULL, sent_count INT NOT NULL)`)
}

// OnEvent records the notification of an order with an UPSERT. sent_count
// counts how often the effect happened: the inbox keeps it at 1.
func (n *Notifications) OnEvent(ctx context.Context, tx *sql.Tx, ev eventkit.Event) error {
	var orderID, kind, msg string
	switch ev.Type {
	case TypeInventoryReserved:
		p, err := eventkit.Decode[InventoryReserved](n.Reg, ev)
		if err != nil {
			return err
		}
		orderID, kind, msg = p.OrderID, "confirmed", fmt.Sprintf("Your %d x %s are on their way.", p.Quantity, p.ProductName)
	case TypeOrderCancelled:
		p, err := eventkit.Decode[OrderCancelled](n.Reg, ev)
		if err != nil {
			return err
		}
		orderID, kind, msg = p.OrderID, "cancelled", "Sorry, your order was cancelled: "+p.Reason
	default:
		return nil
	}
	_, err := tx.ExecContext(ctx, n.DB.Q(`INSERT INTO demo_notifications (order_id, kind, message, sent_count) VALUES (?, ?, ?, 1)`+
		n.DB.upsert("order_id", "sent_count = demo_notifications.sent_count + 1")), orderID, kind, msg)
	return err
}
