"""py_lru_cache: a response cache with a fixed capacity (functools.lru_cache of 512 entries of
4 KiB) that fills within a few seconds and then evicts its oldest entry for each new one: its
memory plateaus. Not a leak. Prints the scenarios' summary line at the end.
Usage: py_lru_cache.py [SECONDS]"""
import functools
import json
import sys
import time


@functools.lru_cache(maxsize=512)
def render(n):
    return bytearray(4096)


def main(seconds):
    start = time.monotonic()
    n = 0
    while True:
        next_tick = start + (n + 1) * 0.005
        if next_tick - start > seconds:
            break
        time.sleep(max(0.0, next_tick - time.monotonic()))
        render(n)
        n += 1
    print(json.dumps({"scenario": "py_lru_cache", "leak_function": None, "leaked_bytes": 0}),
          flush=True)


main(float(sys.argv[1]) if len(sys.argv) > 1 else 6.0)
