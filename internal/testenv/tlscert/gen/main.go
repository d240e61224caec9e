// Command gen writes the TLS test certificates into a directory and prints
// the NATS user NKey's public key (for scripts/tlsservers.sh).
package main

import (
	"fmt"
	"os"

	"github.com/eventkit/eventkit/internal/testenv/tlscert"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gen DIR")
		os.Exit(2)
	}
	f, err := tlscert.Generate(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(f.NKeyPublic)
}
