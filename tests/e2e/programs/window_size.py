"""Streams lines for a while and reports the terminal size at every SIGWINCH.

``window_size.py SECONDS``: a thread writes ``stream N`` lines for SECONDS;
every SIGWINCH and every typed line prints ``SIZE COLSxROWS``; ``quit`` ends.
"""

import fcntl
import os
import signal
import struct
import sys
import termios
import threading
import time


def size() -> str:
    rows, cols, _x, _y = struct.unpack("HHHH", fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8))
    return f"{cols}x{rows}"


def report(*_: object) -> None:
    os.write(1, f"SIZE {size()}\n".encode())


def stream(seconds: float) -> None:
    end = time.monotonic() + seconds
    number = 0
    while time.monotonic() < end:
        number += 1
        os.write(1, f"stream {number} {'=' * 60}\n".encode())
        time.sleep(0.002)
    os.write(1, b"STREAM-DONE\n")


signal.signal(signal.SIGWINCH, report)
threading.Thread(target=stream, args=(float(sys.argv[1]),), daemon=True).start()
for line in sys.stdin:
    if line.strip() == "quit":
        break
    report()
