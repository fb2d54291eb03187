"""Writes every byte 0-255, then UTF-8 text split at odd offsets, in separate writes."""

import os
import sys

out = sys.stdout.fileno()
os.write(out, b"BYTES-BEGIN\n")
for start in range(0, 256, 7):
    os.write(out, bytes(range(start, min(256, start + 7))))
os.write(out, b"\x1b[0m\x1bc\nUTF8-BEGIN\n")
text = "héllo → 世界 🎉 ünïcödé ✓ 𝄞\n".encode()
for width in (1, 3, 5):
    for at in range(0, len(text), width):
        os.write(out, text[at : at + width])
os.write(out, b"BYTES-END\n")
