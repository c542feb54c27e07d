"""Loading the results store before and after compaction, locally and on a local S3 server.

Local: ``--files`` one-row files (the layout a run writes: one file per trial and class)
are read with ``read_results``, then compacted; the compacted store is then grown to
``--rows`` rows (parts of synthetic rows, merged by the same compaction) and read again.
The per-file cost of the uncompacted read is extrapolated to ``--rows`` files, because
writing 100k one-row files alone takes minutes.

S3: ``--s3-rows`` one-row files on moto's server (loopback), read, compacted and read
again; the HTTP requests of each step are counted from the server's request log.

    python benchmarks/store_load.py [--files 20000] [--rows 100000] [--s3-rows 10000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import _bench
import pyarrow as pa
import pyarrow.parquet as pq

from raysearch.store import results

CLASSES = 10  # classes per trial
CONFIG = {f"params.p{i}": float for i in range(8)} | {"train.lr": float, "train.epochs": int}
SCHEMA = results.results_schema(CONFIG)
T0 = 1_800_000_000


def row(i: int) -> dict:
    trial, ci = divmod(i, CLASSES)
    return {"experiment": "bench", "kind": "tune", "trial_id": f"t{trial:06d}", "optuna_trial": trial,
            "class_index": ci, "normal_class": str(ci), "status": "completed", "method": "distcon",
            "dataset": "digits", "seed": 0, "config_hash": f"{trial:016x}", "config_json": "{}",
            "val_image_auroc": (i % 97) / 97, "test_image_auroc": (i % 89) / 89, "epochs": 10,
            "train.lr": 1e-3 * (1 + trial % 7), "train.epochs": 10, "timestamp": T0 + i,
            **{f"params.p{k}": float(k * trial % 13) for k in range(8)}}


def write_files(out: str, start: int, stop: int, threads: int = 16) -> None:
    """One-row files, named as a run names them."""
    where = results.results_dir(out)

    def one(i: int) -> None:
        r = row(i)
        results.write_rows(where, SCHEMA, [r], f"{r['trial_id']}--{r['class_index']:03d}-{r['normal_class']}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(start, stop)))


def write_part(out: str, start: int, stop: int) -> None:
    """A part of rows [start, stop), as compaction writes one."""
    rows = [row(i) for i in range(start, stop)]
    table = pa.table({f.name: [r.get(f.name) for r in rows] for f in SCHEMA}, schema=SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    results.write_bytes(results.join(results.results_dir(out), f"{results.PART_PREFIX}bench{start}.parquet"),
                        sink.getvalue().to_pybytes())


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def local(files: int, rows: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="raysearch-bench-store-")
    try:
        t_write, _ = timed(lambda: write_files(tmp, 0, files))
        t_before, table = timed(lambda: results.read_results(tmp))
        assert table.num_rows == files
        t_compact, done = timed(lambda: results.compact(tmp))
        t_small, table = timed(lambda: results.read_results(tmp))
        assert table.num_rows == files and len(done.parts) == 1
        for start in range(files, rows, 20_000):  # grow it to `rows`, then merge into one part
            write_part(tmp, start, min(rows, start + 20_000))
        t_grow, done = timed(lambda: results.compact(tmp))
        t_after, table = timed(lambda: results.read_results(tmp))
        assert table.num_rows == rows and len(done.parts) == 1
        size = sum(os.path.getsize(os.path.join(tmp, "results", f)) for f in os.listdir(os.path.join(tmp, "results")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per_file = t_before / files
    return {"files": files, "write_s": t_write, "read_before_s": t_before, "per_file_ms": 1000 * per_file,
            "read_before_extrapolated_s": per_file * rows, "compact_s": t_compact, "read_compacted_files_s": t_small,
            "rows": rows, "compact_to_rows_s": t_grow, "read_after_s": t_after, "part_mb": size / 2**20}


class S3Server:
    """moto's S3 server on loopback; counts the HTTP requests in its request log."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = tempfile.NamedTemporaryFile(prefix="raysearch-moto-", suffix=".log", delete=False).name
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), start_new_session=True)
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the local S3 server (moto) did not start") from None
                time.sleep(0.2)
        import pyarrow.fs as pafs

        pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1", scheme="http",
                          endpoint_override=f"127.0.0.1:{self.port}", allow_bucket_creation=True).create_dir("bench")

    def uri(self, prefix: str) -> str:
        return (f"s3://testing:testing@bench/{prefix}?endpoint_override=127.0.0.1:{self.port}"
                "&scheme=http&region=us-east-1")

    def requests(self) -> dict[str, int]:
        with open(self.log) as f:
            methods = re.findall(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|HEAD|POST|DELETE) ', f.read())  # werkzeug colours some
        return {m: methods.count(m) for m in sorted(set(methods))}

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.unlink(self.log)


def counted(server: S3Server, fn):
    before = server.requests()
    seconds, out = timed(fn)
    after = server.requests()
    return seconds, {m: n - before.get(m, 0) for m, n in after.items() if n - before.get(m, 0)}, out


def s3(rows: int) -> dict:
    server = S3Server()
    try:
        out = server.uri("store")
        t_write, req_write, _ = counted(server, lambda: write_files(out, 0, rows))
        t_before, req_before, table = counted(server, lambda: results.read_results(out))
        assert table.num_rows == rows
        t_compact, req_compact, done = counted(server, lambda: results.compact(out))
        t_after, req_after, table = counted(server, lambda: results.read_results(out))
        assert table.num_rows == rows and len(done.parts) == 1
    finally:
        server.close()
    return {"rows": rows, "write_s": t_write, "write_requests": req_write, "read_before_s": t_before,
            "read_before_requests": req_before, "compact_s": t_compact, "compact_requests": req_compact,
            "read_after_s": t_after, "read_after_requests": req_after}


def total(requests: dict[str, int]) -> str:
    return f"{sum(requests.values()):,} requests ({', '.join(f'{n:,} {m}' for m, n in requests.items())})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20_000, help="one-row files written and read locally")
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the compacted local store")
    ap.add_argument("--s3-rows", type=int, default=10_000, help="one-row files on the local S3 server (0: skip)")
    args = ap.parse_args()
    print(_bench.machine_line(_bench.machine()))
    loc = local(args.files, args.rows)
    print(f"local, {loc['files']:,} one-row files (written in {loc['write_s']:.1f} s): read_results "
          f"{loc['read_before_s']:.2f} s, {loc['per_file_ms']:.2f} ms per file -> ~{loc['read_before_extrapolated_s']:.0f} s "
          f"for {loc['rows']:,} files; compact {loc['compact_s']:.2f} s; read_results of the part {loc['read_compacted_files_s']:.2f} s")
    print(f"local, {loc['rows']:,} rows compacted into one part ({loc['part_mb']:.1f} MB, merged in "
          f"{loc['compact_to_rows_s']:.2f} s): read_results {loc['read_after_s']:.2f} s "
          f"(goal < 3 s: {'met' if loc['read_after_s'] < 3 else 'not met'})")
    s3_out = s3(args.s3_rows) if args.s3_rows else None
    if s3_out:
        print(f"S3 (moto on loopback), {s3_out['rows']:,} one-row files: read_results {s3_out['read_before_s']:.2f} s, "
              f"{total(s3_out['read_before_requests'])}")
        print(f"  compact: {s3_out['compact_s']:.2f} s, {total(s3_out['compact_requests'])}")
        print(f"  read_results after: {s3_out['read_after_s']:.2f} s, {total(s3_out['read_after_requests'])}")
    path = _bench.save("store_load", {"args": vars(args), "local": loc, "s3": s3_out})
    print(f"wrote {os.path.relpath(path, _bench.REPO)}")


if __name__ == "__main__":
    main()
