package demo

import (
	"context"
	"fmt"
	"github.com/eventkit/eventkit/examples/shop"
)

// Verdict is the consistency check of a demo run, computed from the three
// services' databases.
// maxListed is how many pending orders a verdict names one by one.
const maxListed = 5

type Verdict struct {
	Orders        int      `json:"orders"`
	Confirmed     int      `json:"confirmed"`
	Cancelled     int      `json:"cancelled"`
	Pending       int      `json:"pending"`
	Notifications int      `json:"notifications"`
	Problems      []string `json:"problems"`
	OK            bool     `json:"ok"`
}

func (v *Verdict) fail(format string, args ...any) {
	if len(v.Problems) < 20 {
		v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
	}
}

// Check computes the verdict: every order is either confirmed, reserved once
// and notified once, or cancelled, rejected once and notified once; stock is
// never negative and initial stock = available + reserved quantities.
func Check(ctx context.Context, orders, inventory, notifications shop.DB) (Verdict, error) {
	var v Verdict
	type order struct {
		status string
		sku    string
		qty    int
	}
	all := map[string]order{}
	rows, err := orders.QueryContext(ctx, `SELECT id, status, sku, quantity FROM demo_orders`)
	if err != nil {
		return v, err
	}
	for rows.Next() {
		var id string
		var o order
		if err := rows.Scan(&id, &o.status, &o.sku, &o.qty); err != nil {
			rows.Close()
			return v, err
		}
		all[id] = o
		switch o.status {
		case "confirmed":
			v.Confirmed++
		case "cancelled":
			v.Cancelled++
		default:
			v.Pending++
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return v, err
	}
	v.Orders = len(all)

	type res struct{ reserved, rejected, qty int }
	resv := map[string]*res{}
	rows, err = inventory.QueryContext(ctx, `SELECT order_id, status, quantity FROM demo_reservations`)
	if err != nil {
		return v, err
	}
	for rows.Next() {
		var id, status string
		var qty int
		if err := rows.Scan(&id, &status, &qty); err != nil {
			rows.Close()
			return v, err
		}
		r := resv[id]
		if r == nil {
			r = &res{}
			resv[id] = r
		}
		if status == "reserved" {
			r.reserved++
			r.qty += qty
		} else {
			r.rejected++
		}
	}
	rows.Close()

	notes := map[string]struct {
		kind string
		sent int
	}{}
	rows, err = notifications.QueryContext(ctx, `SELECT order_id, kind, sent_count FROM demo_notifications`)
	if err != nil {
		return v, err
	}
	for rows.Next() {
		var id, kind string
		var sent int
		if err := rows.Scan(&id, &kind, &sent); err != nil {
			rows.Close()
			return v, err
		}
		notes[id] = struct {
			kind string
			sent int
		}{kind, sent}
	}
	rows.Close()
	v.Notifications = len(notes)

	pending := 0
	for id, o := range all {
		r := resv[id]
		n, notified := notes[id]
		switch {
		case o.status == "pending":
			if pending++; pending <= maxListed {
				v.fail("order %s is still pending", id)
			}
		case r == nil:
			v.fail("order %s (%s) has no reservation record", id, o.status)
		case o.status == "confirmed" && (r.reserved != 1 || r.rejected != 0):
			v.fail("confirmed order %s has %d reservations and %d rejections, want 1 and 0", id, r.reserved, r.rejected)
		case o.status == "cancelled" && (r.reserved != 0 || r.rejected != 1):
			v.fail("cancelled order %s has %d reservations and %d rejections, want 0 and 1", id, r.reserved, r.rejected)
		case !notified:
			v.fail("order %s (%s) was never notified", id, o.status)
		case n.sent != 1:
			v.fail("order %s was notified %d times", id, n.sent)
		case n.kind != o.status:
			v.fail("order %s is %s but its notification says %s", id, o.status, n.kind)
		}
	}
	if pending > maxListed {
		v.fail("%d more orders are still pending", pending-maxListed)
	}
	for id := range resv {
		if _, ok := all[id]; !ok {
			v.fail("reservation for unknown order %s", id)
		}
	}

	reservedBySKU := map[string]int{}
	for id, r := range resv {
		if o, ok := all[id]; ok {
			reservedBySKU[o.sku] += r.qty
		}
	}
	rows, err = inventory.QueryContext(ctx, `SELECT sku, initial, available FROM demo_stock`)
	if err != nil {
		return v, err
	}
	for rows.Next() {
		var sku string
		var initial, available int
		if err := rows.Scan(&sku, &initial, &available); err != nil {
			rows.Close()
			return v, err
		}
		if available < 0 {
			v.fail("stock of %s is negative: %d", sku, available)
		}
		if initial != available+reservedBySKU[sku] {
			v.fail("stock of %s: initial %d != available %d + reserved %d", sku, initial, available, reservedBySKU[sku])
		}
	}
	rows.Close()
	v.OK = len(v.Problems) == 0
	return v, nil
}
