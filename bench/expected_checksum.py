#!/usr/bin/env python3
"""Independent recomputation of the reference job's checksum (no Flink, no Oxbow).

Runs the recipe literally: a sequential splitmix64 stream (state starting at 42), event i takes the
next two outputs, key = r1 mod 10000, amount = r2 mod 1000, ts_ms = i // 1000; filter amount >= 100;
1 s tumbling event-time windows aligned to the epoch; count and sum(amount) per key and window.
Prints `rows=R count=C sum=S`. Pure Python: about 2-3 s per million events.

usage: bench/expected_checksum.py [--events N]     (default 1000000)
"""
import argparse

MASK = (1 << 64) - 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    n = ap.parse_args().events

    state = 42

    def next64() -> int:
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    windows = {}  # (window_start, key) -> [count, sum]
    for i in range(n):
        r1 = next64()
        r2 = next64()
        key = r1 % 10000
        amount = r2 % 1000
        ts = i // 1000
        if amount < 100:
            continue
        w = (ts - ts % 1000, key)
        acc = windows.get(w)
        if acc is None:
            windows[w] = [1, amount]
        else:
            acc[0] += 1
            acc[1] += amount

    rows = len(windows)
    count = sum(a[0] for a in windows.values())
    total = sum(a[1] for a in windows.values())
    print(f"events={n} rows={rows} count={count} sum={total}")


if __name__ == "__main__":
    main()
