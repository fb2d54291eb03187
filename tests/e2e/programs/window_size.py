"""Reports the terminal size at every SIGWINCH and when a line is typed ("size?")."""

import fcntl
import signal
import struct
import sys
import termios


def report(*_: object) -> None:
    rows, cols, _x, _y = struct.unpack("HHHH", fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8))
    sys.stdout.write(f"SIZE {cols}x{rows}\n")
    sys.stdout.flush()


signal.signal(signal.SIGWINCH, report)
report()
for line in sys.stdin:
    if line.strip() == "quit":
        break
    report()
