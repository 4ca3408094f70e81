// go_leak: an event log in Go that keeps a 16 KiB record every 40 ms in a package-level slice
// and never drops one: 400 KiB/s of heap that only grows. Go has no malloc to probe: its
// allocator maps arenas and hands out spans itself, so only the page-fault method sees where the
// memory goes. Prints the scenarios' summary line when its run (argv[1] seconds, 6 by default) is
// over.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

const recordSize = 16384

var retained [][]byte

//go:noinline
func rememberEvent(n int) {
	record := make([]byte, recordSize)
	for i := range record {
		record[i] = byte(n)
	}
	retained = append(retained, record)
}

func main() {
	seconds := 6.0
	if len(os.Args) > 1 {
		parsed, err := strconv.ParseFloat(os.Args[1], 64)
		if err != nil || parsed <= 0 {
			fmt.Fprintf(os.Stderr, "usage: %s [SECONDS]\n", os.Args[0])
			os.Exit(2)
		}
		seconds = parsed
	}
	start := time.Now()
	n := 0
	for tick := 1; ; tick++ {
		next := start.Add(time.Duration(tick) * 40 * time.Millisecond)
		if next.Sub(start).Seconds() > seconds {
			break
		}
		time.Sleep(time.Until(next))
		rememberEvent(n)
		n++
	}
	fmt.Printf("{\"scenario\":\"go_leak\",\"leak_function\":\"main.rememberEvent\",\"leaked_bytes\":%d}\n", n*recordSize)
}
