// The sandbox ("pause") container of the test node's Pods (tests/node.py): it holds the Pod's
// namespaces and waits for SIGTERM or SIGINT. The upstream image cannot be pulled here, so a
// static binary built from this file is the only file of a locally made image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
