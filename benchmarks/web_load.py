"""A bounded load test of ``membudget serve`` on loopback: a fixed number of requests from
concurrent clients (plans, catalogue, hardware, and hostile requests that must be refused with
403/413/422), each answer checked. Prints throughput, latency and the error count.

    python benchmarks/web_load.py --requests 4000 --clients 32
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.loadtest import MIX, run_load, serving


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, serving(Path(tmp)) as url:
        print(f"server: {url} (membudget serve, uvicorn, loopback)")
        print(f"mix: {len(MIX)} request kinds, round robin; {args.clients} concurrent clients")
        r = run_load(url, args.requests, args.clients)
    print(f"requests: {r.requests:,} in {r.seconds:.2f} s = {r.per_second:,.0f} requests/s")
    print(
        f"latency: p50 {r.percentile(0.5) * 1000:.1f} ms, p99 {r.percentile(0.99) * 1000:.1f} ms, "
        f"max {max(r.latencies, default=0) * 1000:.1f} ms"
    )
    print(f"errors: {r.errors}")
    for p in r.problems[:10]:
        print(f"  {p}")
    return 1 if r.errors else 0


if __name__ == "__main__":
    sys.exit(main())
