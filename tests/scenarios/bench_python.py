"""bench_python: times ITERATIONS allocations of a 600-byte bytearray (over pymalloc's 512-byte
limit, so each one is a malloc and a free) in a Python function, for `cargo xtask bench`, and
prints {"iterations":N,"ns_per_allocation":X}. Usage: bench_python.py [ITERATIONS]"""
import json
import sys
import time


def allocate(iterations):
    for _ in range(iterations):
        buffer = bytearray(600)
        buffer[0] = 1


def main(iterations):
    start = time.perf_counter_ns()
    allocate(iterations)
    elapsed = time.perf_counter_ns() - start
    print(json.dumps({"iterations": iterations, "ns_per_allocation": elapsed / iterations}))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000000)
