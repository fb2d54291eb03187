"""Prints numbered lines until stopped: ``counter.py [LINES_PER_SECOND] [WIDTH]``.

Each line is ``n=<number> <padding>``; a reader checks that every number
arrives exactly once and in order. With no rate it writes as fast as it can.
"""

import os
import sys
import time

rate = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
width = int(sys.argv[2]) if len(sys.argv) > 2 else 40
out = sys.stdout.fileno()
start = time.monotonic()
number = 0
while True:
    number += 1
    os.write(out, (f"n={number:09d} ".ljust(width, ".") + "\n").encode())
    if rate:
        delay = start + number / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
