"""Benchmark: 個人番号 scan cost per payload (run: python tests/policy/bench_detector.py).

Payloads: Japanese text without numbers, and digit-dense fixed-length records (the worst case),
1 KiB and 64 KiB, in several encodings. Baseline in the same run: decode the payload and run a
str regex for the same shapes plus the check digit (what a naive scanner would do). Prints µs per
payload, µs per KiB and the ratio ours/baseline.
"""

from __future__ import annotations

import os
import platform
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.policy.detector import check_digit_ok, scanner
from tests.lab import synth

NAIVE = re.compile(r"(?<!\d)(\d{4})[ \-\u3000－]?(\d{4})[ \-\u3000－]?(\d{4})(?!\d)")


def naive(data: bytes, codec: str) -> list[int]:
    text = data.decode(codec, "replace")
    return [m.start() for m in NAIVE.finditer(text)
            if check_digit_ok([int(c) for c in m.group(1) + m.group(2) + m.group(3)])]


def record(rng: random.Random) -> str:
    name = "ヤマダ　タロウ".ljust(12, "　")
    return (f"{rng.randrange(99999):05d} {rng.randrange(10**11):011d} {name} {20261125:08d} {19800101:08d} "
            f"Ａ {rng.randrange(999999):06d}\n")


def timeit(fn, data: bytes, seconds: float = 0.3) -> float:  # type: ignore[no-untyped-def]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(data)
        n += 1
    return (time.perf_counter() - t0) / n


def main() -> None:
    print(f"machine: {platform.node()}, {os.cpu_count()} cpu, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'encoding':10} {'payload':8} {'size':>6} {'ours us':>9} {'us/KiB':>7} {'naive us':>9} "
          f"{'ratio':>6}")
    rng = random.Random(1)
    cases = (("utf-8", "utf-8"), ("cp932", "cp932"), ("euc-jp", "euc-jp"), ("utf-16le", "utf-16-le"),
             ("cp930", None))
    for enc, codec in cases:
        sc = scanner(enc)
        gen = "cp930" if enc == "cp930" else codec
        text = synth.payload(random.Random(3), gen or enc, [], size=70000).data
        recs = b"".join(synth.encode(record(rng), gen or enc) for _ in range(1400))
        for label, src in (("text", text), ("records", recs)):
            for size in (1024, 65536):
                data = src[:size]
                ours = timeit(sc.find, data)
                base = timeit(lambda d, c=codec: naive(d, c), data) if codec else float("nan")
                print(f"{enc:10} {label:8} {size:6d} {ours * 1e6:9.1f} {ours * 1e6 / (size / 1024):7.1f} "
                      f"{base * 1e6:9.1f} {ours / base:6.2f}")


if __name__ == "__main__":
    main()
