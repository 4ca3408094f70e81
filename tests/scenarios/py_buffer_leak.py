"""py_buffer_leak: a data-processing loop that keeps each record's 4 KiB scratch buffer in a
module-level list it never clears (the classic Python leak), 100 records a second, beside
temporary buffers that are dropped at once. Prints the scenarios' summary line at the end.
Usage: py_buffer_leak.py [SECONDS]"""
import json
import sys
import time

RECORD_SIZE = 4096
PROCESSED = []


def remember(record):
    PROCESSED.append(bytearray(record))


def process(n):
    scratch = bytes(n % 256 for _ in range(64))
    remember(RECORD_SIZE)
    return len(scratch)


def main(seconds):
    start = time.monotonic()
    n = 0
    while True:
        next_tick = start + (n + 1) * 0.01
        if next_tick - start > seconds:
            break
        time.sleep(max(0.0, next_tick - time.monotonic()))
        process(n)
        n += 1
    print(json.dumps({"scenario": "py_buffer_leak", "leak_function": "remember",
                      "leaked_bytes": n * RECORD_SIZE}), flush=True)


main(float(sys.argv[1]) if len(sys.argv) > 1 else 6.0)
