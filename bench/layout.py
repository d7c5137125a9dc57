"""The store layout for N = 300k: chunk size and codecs of ``gram``, measured on real NTK blocks (< 3 min).

    python -m bench.layout                   # every chunk size, codec and backend; a table on stdout
    python -m bench.layout --json out.json   # and the numbers as JSON

For each chunk size (1024, 2048, 4096) one off-diagonal float32 block of the depth-3 ReLU NTK of standard Gaussian
points in R^64 (`ntkdist.kernels.gram_block`, as a worker computes it) is written as one zarr chunk and read back,
with no compression, zstd (zarr's default codec) and blosc with byte shuffle (zstd, and the faster lz4), on local
disk and on a moto S3 server on loopback. Reported: write and read MB/s (of the uncompressed bytes; the best of
``--repeat`` runs) and the compression ratio (uncompressed bytes over stored bytes). Also the latency of a small
object on each backend, the fixed cost per object that larger objects (zarr v3 shards) would amortise.
storage/README.md records the numbers and the choices they led to.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.sync import sync

from ntkdist.kernels import MLP, gram_block
from ntkdist.store.location import zarr_store

CHUNKS = (1024, 2048, 4096)
CODECS = {"none": None, "zstd": [ZstdCodec()], "blosc-zstd-shuffle": [BloscCodec(cname="zstd", shuffle="shuffle")],
          "blosc-lz4-shuffle": [BloscCodec(cname="lz4", shuffle="shuffle")]}


def ntk_block(size: int, dim: int, seed: int = 0) -> np.ndarray:
    """An off-diagonal float32 NTK block (rows and columns from different points), as a worker writes it."""
    X = np.random.default_rng(seed).standard_normal((2 * size, dim))
    net = MLP(depth=3, activation="relu")
    return np.ascontiguousarray(gram_block(X[:size], X[size:], net=net, kind="ntk", dtype="float32"))


def time_chunk(location: str, block: np.ndarray, codecs, repeat: int) -> dict:
    """Best write and read seconds of one whole chunk, and its stored size."""
    size = block.shape[0]
    group = zarr.open_group(zarr_store(location), mode="w", zarr_format=3)
    array = group.create_array("gram", shape=block.shape, chunks=block.shape, dtype="float32",
                               compressors=codecs, fill_value=np.nan)
    writes, reads = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        array[:] = block
        writes.append(time.perf_counter() - start)
        start = time.perf_counter()
        back = array[:]
        reads.append(time.perf_counter() - start)
    assert np.array_equal(back, block)
    stored = int(sync(_chunk_size(array)))
    megabytes = block.nbytes / 1e6
    return {"chunk": size, "write_mb_s": round(megabytes / min(writes), 1),
            "read_mb_s": round(megabytes / min(reads), 1), "ratio": round(block.nbytes / stored, 3),
            "stored_mb": round(stored / 1e6, 2)}


async def _chunk_size(array: zarr.Array) -> int:
    return await array.store_path.store.getsize(f"{array.path}/c/0/0")


def small_object_latency(location: str, repeat: int = 20) -> float:
    """Median seconds to put and get one 1 KiB object (the fixed cost per request)."""
    group = zarr.open_group(zarr_store(location), mode="w", zarr_format=3)
    array = group.create_array("tiny", shape=(256,), chunks=(256,), dtype="float32", compressors=None)
    values = np.arange(256, dtype=np.float32)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        array[:] = values
        array[:]
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def backends(root: str, bucket_url: str | None) -> dict[str, str]:
    found = {"local": os.path.join(root, "layout.zarr")}
    if bucket_url:
        found["s3 (moto, loopback)"] = f"{bucket_url}/layout.zarr"
    return found


def start_s3() -> tuple[object, str]:
    """A moto server on loopback with a bucket, credentials in the environment (the test fixture's recipe)."""
    import s3fs

    from tests.helpers import start_moto_server

    process, endpoint = start_moto_server()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    s3fs.S3FileSystem(endpoint_url=endpoint).mkdir("layout-bench")
    return process, "s3://layout-bench/run"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true", help="local disk only")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    process, bucket = (None, None) if args.no_s3 else start_s3()
    rows, latency = [], {}
    try:
        blocks = {size: ntk_block(size, args.dim) for size in CHUNKS}
        with tempfile.TemporaryDirectory() as root:
            for backend, location in backends(root, bucket).items():
                latency[backend] = round(small_object_latency(location) * 1e3, 2)
                for size, block in blocks.items():
                    for name, codecs in CODECS.items():
                        row = {"backend": backend, "codec": name, **time_chunk(location, block, codecs, args.repeat)}
                        rows.append(row)
                        print(f"{backend:20s} {name:18s} chunk {size:5d}: write {row['write_mb_s']:7.1f} MB/s, "
                              f"read {row['read_mb_s']:7.1f} MB/s, ratio {row['ratio']:.3f}", flush=True)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    for backend, ms in latency.items():
        print(f"{backend:20s} put + get of a 1 KiB object: {ms:.2f} ms")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "small_object_ms": latency, "dim": args.dim, "repeat": args.repeat}, handle,
                      indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
