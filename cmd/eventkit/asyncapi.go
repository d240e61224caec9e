package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/asyncapi"
	"github.com/eventkit/eventkit/examples/shop"
)

func init() { commands = append(commands, asyncapiCmd) }

// demoServices describes what each demo service publishes and consumes (as
// internal/demo wires them: orders consumes the inventory topic, inventory
// the orders topic, notifications both).
func demoServices(topics shop.Topics, b eventkit.Binding) []asyncapi.Service {
	reg := shop.NewRegistry()
	svc := func(name, desc string, pub, sub []asyncapi.Channel) asyncapi.Service {
		return asyncapi.Service{Name: name, Description: desc, Registry: reg, Binding: b, Publishes: pub, Subscribes: sub}
	}
	ch := func(topic string, types ...string) []asyncapi.Channel {
		return []asyncapi.Channel{{Topic: topic, Types: types}}
	}
	return []asyncapi.Service{
		svc("orders", "The demo's orders service: places orders (order.created) and cancels the rejected ones (order.cancelled).",
			ch(topics.Orders, shop.TypeOrderCreated, shop.TypeOrderCancelled),
			ch(topics.Inventory, shop.TypeInventoryReserved, shop.TypeInventoryRejected)),
		svc("inventory", "The demo's inventory service: reserves stock for each order (inventory.reserved or inventory.rejected).",
			ch(topics.Inventory, shop.TypeInventoryReserved, shop.TypeInventoryRejected),
			ch(topics.Orders, shop.TypeOrderCreated)),
		svc("notifications", "The demo's notifications service: tells customers about confirmed and cancelled orders.",
			nil,
			append(ch(topics.Orders, shop.TypeOrderCancelled), ch(topics.Inventory, shop.TypeInventoryReserved)...)),
	}
}

var asyncapiBindings = map[string]eventkit.Binding{
	"nats": eventkit.NATSBinding, "kafka": eventkit.KafkaBinding, "amqp": eventkit.AMQPBinding, "redis": eventkit.RedisBinding,
}

func asyncapiCmd(g *globals) *cobra.Command {
	var format, binding, prefix string
	cmd := &cobra.Command{
		Use:   "asyncapi [SERVICE ...]",
		Short: "Print the AsyncAPI 3.0 documents of the demo services",
		Long: `asyncapi prints an AsyncAPI 3.0 document for each demo service (orders,
inventory, notifications; all three without arguments), generated from the
demo's event type registry and its topics with the asyncapi package: a
channel per topic, a message per event type and version with its payload
schema and CloudEvents headers, and the service's send and receive
operations. Several documents are printed one after another: YAML
documents separated by "---", JSON documents as a JSON stream.

Your own services call asyncapi.Document with their registry and routes;
see docs/asyncapi.md.

  eventkit asyncapi
  eventkit asyncapi orders --format json > orders.asyncapi.json
  eventkit asyncapi inventory --binding kafka`,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, ok := asyncapiBindings[binding]
			if !ok {
				return usageError{fmt.Errorf("--binding %q: want nats, kafka, amqp or redis", binding), cmd.CommandPath()}
			}
			if format != "yaml" && format != "json" {
				return usageError{fmt.Errorf("--format %q: want yaml or json", format), cmd.CommandPath()}
			}
			topics := shop.Topics{Orders: prefix + shop.DefaultTopics.Orders, Inventory: prefix + shop.DefaultTopics.Inventory}
			all := demoServices(topics, b)
			var names []string
			for _, s := range all {
				names = append(names, s.Name)
			}
			for _, a := range args {
				if !slices.Contains(names, a) {
					return usageError{fmt.Errorf("unknown service %q: want %s", a, strings.Join(names, ", ")), cmd.CommandPath()}
				}
			}
			first := true
			for _, s := range all {
				if len(args) > 0 && !slices.Contains(args, s.Name) {
					continue
				}
				doc, err := asyncapi.Document(s)
				if err != nil {
					return err
				}
				out, err := doc.YAML()
				if format == "json" {
					out, err = doc.JSON()
				}
				if err != nil {
					return err
				}
				if !first && format == "yaml" {
					out = append([]byte("---\n"), out...)
				}
				first = false
				if _, err := g.stdout.Write(out); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "yaml", "output format: yaml or json")
	cmd.Flags().StringVar(&binding, "binding", "nats", "CloudEvents binding the headers follow: nats, kafka, amqp or redis")
	cmd.Flags().StringVar(&prefix, "topic-prefix", "", "prefix of the demo's topics (as the example programs' --topic-prefix)")
	return cmd
}
