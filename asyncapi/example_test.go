package asyncapi_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/asyncapi"
)

type OrderShipped struct {
	OrderID string `json:"order_id"`
	Carrier string `json:"carrier,omitempty"`
}

func ExampleDocument() {
	reg := eventkit.NewRegistry()
	eventkit.MustRegister[OrderShipped](reg, "order.shipped", "1", eventkit.JSON)

	doc, err := asyncapi.Document(asyncapi.Service{
		Name:      "shipping",
		Registry:  reg,
		Binding:   eventkit.KafkaBinding,
		Publishes: []asyncapi.Channel{{Topic: "shipments", Types: []string{"order.shipped"}}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := doc.JSON() // or doc.YAML()

	var d struct {
		Operations map[string]struct{ Action, Summary string }
		Components struct {
			Messages map[string]struct {
				Headers struct{ Properties map[string]any }
				Payload struct{ Required []string }
			}
		}
	}
	_ = json.Unmarshal(b, &d)
	for id, op := range d.Operations {
		fmt.Println(id, op.Action, op.Summary)
	}
	m := d.Components.Messages["order.shipped.v1"]
	var headers []string
	for h := range m.Headers.Properties {
		headers = append(headers, h)
	}
	slices.Sort(headers)
	fmt.Println("headers:", strings.Join(headers, " "))
	fmt.Println("payload requires:", m.Payload.Required)
	// Output:
	// send_shipments send shipping publishes order.shipped on shipments.
	// headers: ce_dataschema ce_dataversion ce_id ce_source ce_specversion ce_subject ce_time ce_type content-type
	// payload requires: [order_id]
}
