"""What a resumed `score` would pay to hash frame content instead of stat-ing each file.

    python benchmarks/bench_resume_hash.py ../shared/data/camvid

Reads every file below the folder once (sha256 of its bytes), then stats each file; prints
both costs. The README's resume decision quotes it (size + mtime, not content).
"""

import hashlib
import sys
import time
from pathlib import Path


def main(root: Path) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    start, size = time.perf_counter(), 0
    for path in files:
        data = path.read_bytes()
        size += len(data)
        hashlib.sha256(data).digest()
    content = time.perf_counter() - start
    start = time.perf_counter()
    for path in files:
        path.stat()
    stat = time.perf_counter() - start
    return (f"{len(files)} files, {size / 1e6:.0f} MB: content sha256 {content:.2f} s "
            f"({size / 1e6 / content:.0f} MB/s); stat only {stat * 1e3:.1f} ms")


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/camvid")))
