"""py_small_leak: a session index that adds 10,000 small entries a second (a short string key
and a small tuple) to a module-level dict it never prunes: objects under 512 bytes, which
CPython's object allocator (pymalloc) carves from its own arenas rather than from malloc.
Prints the scenarios' summary line at the end. Usage: py_small_leak.py [SECONDS]"""
import json
import sys
import time

SESSIONS = {}


def index_session(n):
    SESSIONS["session-%d" % n] = (n, n * 2, "user")


def main(seconds):
    start = time.monotonic()
    n = 0
    tick = 0
    while True:
        tick += 1
        next_tick = start + tick * 0.01
        if next_tick - start > seconds:
            break
        time.sleep(max(0.0, next_tick - time.monotonic()))
        for _ in range(100):
            index_session(n)
            n += 1
    print(json.dumps({"scenario": "py_small_leak", "leak_function": "index_session",
                      "leaked_bytes": 0}), flush=True)


main(float(sys.argv[1]) if len(sys.argv) > 1 else 6.0)
