"""py_thread_leak: a worker thread (not the main one) that keeps a 4 KiB buffer per job in a
list it never clears, 100 jobs a second, while the main thread waits. Prints the scenarios'
summary line at the end. Usage: py_thread_leak.py [SECONDS]"""
import json
import sys
import threading
import time

RECORD_SIZE = 4096
RESULTS = []


def keep_result(n):
    RESULTS.append(bytearray(RECORD_SIZE))


def worker(seconds, done):
    start = time.monotonic()
    n = 0
    while True:
        next_tick = start + (n + 1) * 0.01
        if next_tick - start > seconds:
            break
        time.sleep(max(0.0, next_tick - time.monotonic()))
        keep_result(n)
        n += 1
    done.append(n)


def main(seconds):
    done = []
    thread = threading.Thread(target=worker, args=(seconds, done), name="worker")
    thread.start()
    thread.join()
    print(json.dumps({"scenario": "py_thread_leak", "leak_function": "keep_result",
                      "leaked_bytes": done[0] * RECORD_SIZE}), flush=True)


main(float(sys.argv[1]) if len(sys.argv) > 1 else 6.0)
