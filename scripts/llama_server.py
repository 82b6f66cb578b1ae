#!/usr/bin/env python3
"""Build llama.cpp's ``llama-server``, ``ggml-rpc-server`` and ``llama-fit-params`` from the very tree
that llama-cpp-python vendors, once per machine, and print the folder that holds them.

    python scripts/llama_server.py [--version 0.3.36]

The sdist comes from the package index (``pip download --no-binary``; pip's own cache keeps
it), so the binaries are llama.cpp at the commit the C API tests use. They are built with the
RPC backend (``-DGGML_RPC=ON``), without libcurl, OpenSSL or the web UI (which would download
its assets), statically linked, and kept in ``$MEMBUDGET_BUILD_CACHE`` (default
``~/.cache/membudget/llama-server``) under the sdist's SHA-256, so a second run, or CI on the same
machine, only checks the stamp. About 10 minutes on 2 cores the first time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.3.36"  # the llama-cpp-python whose vendored llama.cpp (0c1e570) the rules follow
TARGETS = ("llama-server", "ggml-rpc-server", "llama-fit-params")


def cache_root() -> Path:
    env = os.environ.get("MEMBUDGET_BUILD_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "membudget" / "llama-server"


def _sdist(version: str, into: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={version}",
            "-d",
            str(into),
        ],
        check=True,
    )
    (found,) = into.glob(f"llama_cpp_python-{version}.tar.gz")
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build(version: str = VERSION) -> Path:
    """The folder holding the three binaries, built if the cache lacks them."""
    with tempfile.TemporaryDirectory(prefix="membudget-llama-") as tmp:
        work = Path(tmp)
        sdist = _sdist(version, work)
        key = f"{version}-{_sha256(sdist)[:16]}"
        out = cache_root() / key
        stamp = out / "STAMP"
        if stamp.is_file() and all((out / t).is_file() for t in TARGETS):
            return out
        # Source and build folders are kept beside the cache until the binaries are in place,
        # so a build that stopped half way resumes where it was.
        tree = cache_root() / f"src-{key}"
        if not (tree / "STAMP").is_file():
            shutil.rmtree(tree, ignore_errors=True)
            with tarfile.open(sdist) as tar:
                tar.extractall(tree, filter="data")
            (tree / "STAMP").write_text(key + "\n")
        src = tree / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
        build_dir = cache_root() / f"build-{key}"
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(
            [
                "cmake",
                "-S",
                str(src),
                "-B",
                str(build_dir),
                "-DCMAKE_BUILD_TYPE=Release",
                "-DBUILD_SHARED_LIBS=OFF",
                "-DGGML_RPC=ON",
                "-DLLAMA_CURL=OFF",
                "-DLLAMA_OPENSSL=OFF",
                "-DLLAMA_BUILD_UI=OFF",
                "-DLLAMA_USE_PREBUILT_UI=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            ["cmake", "--build", str(build_dir), "-j", jobs, "--target", *TARGETS],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        partial = out.with_name(key + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for t in TARGETS:
            shutil.copy2(build_dir / "bin" / t, partial / t)
        (partial / "STAMP").write_text(f"llama-cpp-python {version}\n{_sha256(sdist)}\n")
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
        shutil.rmtree(build_dir, ignore_errors=True)
        shutil.rmtree(tree, ignore_errors=True)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", default=VERSION)
    args = parser.parse_args()
    print(build(args.version))


if __name__ == "__main__":
    main()
