"""Microbenchmark of the sealed envelope: seal and open per message, both suites, with and without
batch signatures and epoch-key caching, against the raw primitives measured in the same run.

    .venv/bin/python ops/bench/envelope.py [--size 1024] [--batch 64] [--messages 2048] [--repeat 5]

Each figure is the best (minimum) of ``--repeat`` runs, in microseconds per message, so load from
other processes inflates it as little as possible; ratios compare figures from this same run.
"naive" is what the envelope would cost without amortisation: every message its own HPKE
encapsulation and its own signature (sealer: batch of one, one message per epoch; opener: a fresh
Opener, so no verified-root or epoch-key cache). "amortised" is the production path: batches of
``--batch`` messages, one epoch, one Opener. The relay budget lines put the amortised cost against
the per-message time of a plain relay moving 10k and 17k msg/s (the range measured on this machine).

Security: generates throw-away keys in memory; writes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cryptography
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.envelope import Contents, Opener, OpenPolicy, Sealer, SealItem
from gateway.envelope import suites as suite_defs
from gateway.envelope.stage import OpenStage, SealStage
from gateway.message import Message
from tests.lab.testca import keyrings

PLAIN_RATES = (10_000, 17_000)


def best(repeat: int, count: int, run: Callable[[], object]) -> float:
    """Minimum over ``repeat`` runs of ``run()``, in µs per item (``run`` handles ``count`` items)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times) / count * 1e6


def primitives(repeat: int) -> dict[str, float]:
    _, _, rings = keyrings(["a", "b"])
    a, b = rings["a"], rings["b"]
    ident = a.signing_identity()
    data = os.urandom(64)
    n = 200
    out: dict[str, float] = {}
    ec_sig = suite_defs.ecdsa_sign(ident.private_key, data)
    ec_pub = ident.certificate.public_key()
    out["ECDSA P-256 sign"] = best(repeat, n, lambda: [suite_defs.ecdsa_sign(ident.private_key, data)
                                                       for _ in range(n)])
    out["ECDSA P-256 verify"] = best(repeat, n, lambda: [suite_defs.ecdsa_verify(ec_pub, ec_sig, data)  # type: ignore[arg-type]
                                                         for _ in range(n)])
    assert ident.mldsa_private_key is not None and ident.mldsa_certificate is not None
    mkey, mpub = ident.mldsa_private_key, ident.mldsa_certificate.public_key()
    m_sig = suite_defs.mldsa_sign(mkey, data)
    out["ML-DSA-65 sign"] = best(repeat, 50, lambda: [suite_defs.mldsa_sign(mkey, data) for _ in range(50)])
    out["ML-DSA-65 verify"] = best(repeat, n, lambda: [suite_defs.mldsa_verify(mpub, m_sig, data)  # type: ignore[arg-type]
                                                       for _ in range(n)])
    key = os.urandom(32)
    for suite in (suite_defs.DEFAULT, suite_defs.PQ_HYBRID):
        enc = b.own_encryption_key(suite.name).public_key
        dec = b.decryption_keys[b.encryption_key_ids[suite.name]].private_key
        hp = suite.hpke
        ct = hp.encrypt(key, enc, info=b"i")
        label = "HPKE P-256" if suite is suite_defs.DEFAULT else "HPKE ML-KEM-768+X25519"
        out[f"{label} encap (32 B)"] = best(repeat, n, lambda: [hp.encrypt(key, enc, info=b"i")  # noqa: B023
                                                                 for _ in range(n)])
        out[f"{label} decap"] = best(repeat, n, lambda: [hp.decrypt(ct, dec, info=b"i") for _ in range(n)])  # noqa: B023
    payload = os.urandom(1024)
    out["AES-256-GCM 1 KiB"] = best(repeat, 2000, lambda: [AESGCM(key).encrypt(bytes(12), payload, b"")
                                                           for _ in range(2000)])
    return out


def envelope_figures(suite: str, size: int, batch: int, messages: int, repeat: int) -> dict[str, float]:
    _, _, rings = keyrings(["city-a", "dc-b"], pq=True)
    city, dc = rings["city-a"], rings["dc-b"]
    body = os.urandom(size)
    items = [SealItem(f"bench-{i}", Contents(body, {"x-biz": "idou", "x-seq": i},
                                             content_type="application/xml")) for i in range(messages)]
    now = time.time()
    policy = OpenPolicy(frozenset({"city-a"}), frozenset({suite}), frozenset({"r1"}), 3600.0, 300.0)
    few = items[: max(32, messages // 16)]  # the naive paths are slow; fewer messages suffice

    def seal_naive() -> list[bytes | Exception]:
        out: list[bytes | Exception] = []
        for item in few:
            sealer = Sealer(suite=suite, route="r1", recipients=["dc-b"], epoch_messages=1)
            out += sealer.seal([item], city, now)
        return out

    single_epoch = Sealer(suite=suite, route="r1", recipients=["dc-b"], epoch_messages=1 << 24)

    def seal_single_cached() -> None:
        for item in few:
            single_epoch.seal([item], city, now)

    batch_sealer = Sealer(suite=suite, route="r1", recipients=["dc-b"], epoch_messages=1 << 24)

    def seal_batched() -> list[bytes]:
        out: list[bytes] = []
        for start in range(0, messages, batch):
            sealed = batch_sealer.seal(items[start:start + batch], city, now)
            out += [e for e in sealed if isinstance(e, bytes)]
        return out

    singles = [e for e in seal_naive() if isinstance(e, bytes)]
    batched = seal_batched()

    def open_naive() -> None:
        for e in singles:
            Opener(policy).open(e, dc, now)

    def open_cached() -> None:
        opener = Opener(policy)
        for e in batched:
            opener.open(e, dc, now)

    # The stages as the relay calls them: Messages in, Messages out (headers moved, properties restored).
    messages_in = [Message(message_id=i.message_id, route="r1", body=body, content_type="application/xml",
                           headers={"x-biz": "idou", "x-seq": n, "x-jgw-sent-ms": 1})
                   for n, i in enumerate(items)]
    seal_stage = SealStage(Sealer(suite=suite, route="r1", recipients=["dc-b"], epoch_messages=1 << 24),
                           lambda: city, lambda: now, batch, None, None)
    sealed_messages: list[Message] = []

    def run_seal_stage() -> None:
        sealed_messages.clear()
        for start in range(0, messages, batch):
            sealed_messages.extend(m for m in seal_stage.process(messages_in[start:start + batch])
                                   if isinstance(m, Message))

    def run_open_stage() -> None:
        stage = OpenStage(Opener(policy), lambda: dc, lambda: now)
        for start in range(0, len(sealed_messages), batch):
            stage.process(sealed_messages[start:start + batch])

    return {
        "seal naive (HPKE + signature per message)": best(repeat, len(few), seal_naive),
        "seal batch of 1, cached epoch key": best(repeat, len(few), seal_single_cached),
        f"seal amortised (batch {batch}, cached epoch key)": best(repeat, messages, seal_batched),
        "open naive (no caches)": best(repeat, len(singles), open_naive),
        f"open amortised (batch {batch}, caches)": best(repeat, len(batched), open_cached),
        "seal stage, as the relay calls it (Messages)": best(repeat, messages, run_seal_stage),
        "open stage, as the relay calls it (Messages)": best(repeat, messages, run_open_stage),
        "envelope bytes": float(len(batched[0])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="payload bytes (default 1024)")
    parser.add_argument("--batch", type=int, default=64, help="seal batch size (default 64)")
    parser.add_argument("--messages", type=int, default=2048, help="messages per amortised run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the best is kept")
    args = parser.parse_args(argv)

    print(f"# jgw envelope microbenchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}Z")
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}, "
          f"Python {platform.python_version()}, cryptography {cryptography.__version__}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"# payload {args.size} B, batch {args.batch}, {args.messages} messages, best of {args.repeat}\n")

    print("primitives (µs per operation)")
    for name, us in primitives(args.repeat).items():
        print(f"  {name:<40} {us:9.1f}")

    for suite in ("default", "pq-hybrid"):
        fig = envelope_figures(suite, args.size, args.batch, args.messages, args.repeat)
        size = fig.pop("envelope bytes")
        names = list(fig)
        seal_naive, _, seal_amortised, open_naive, open_amortised, seal_stage, open_stage = (
            fig[n] for n in names)
        print(f"\nsuite {suite} (µs per message; envelope {size:.0f} B for a {args.size} B payload)")
        for name, us in fig.items():
            print(f"  {name:<52} {us:9.1f}")
        print(f"  ratio seal naive / amortised {seal_naive / seal_amortised:29.1f}x")
        print(f"  ratio open naive / amortised {open_naive / open_amortised:29.1f}x")
        together = seal_stage + open_stage
        print(f"  seal + open stages together {together:30.1f} µs  (one core: {1e6 / together:,.0f} msg/s)")
        for rate in PLAIN_RATES:
            budget = 1e6 / rate
            print(f"  plain relay at {rate:>6,} msg/s = {budget:.0f} µs/msg: seal adds "
                  f"{seal_stage / budget:.0%} on the sending node, open {open_stage / budget:.0%} on "
                  f"the receiving node (serial on one core: x{1 / (1 + together / budget):.2f} throughput)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
