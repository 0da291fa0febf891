"""The Python side of bench/python.sh: per-call costs of the inferd package.

  python_rt.py inproc --model FILE --requests N [--tokens K] --raw-dir DIR
      In-process, through inferd.get_or_load(FILE, threads=1). --tokens 1:
      a greedy 1-token completion through Model.complete and through an
      iteration of Model.generate, the two alternating call by call; the
      samples (us per call) are appended to DIR/complete.txt and
      DIR/generate.txt. --tokens K > 1: K tokens (ignore_eos, seed 42,
      default sampling) through Model.generate only; the samples (us per
      token: the call's time / K) go to DIR/generate.txt.
  python_rt.py client --url URL --requests N --raw-dir DIR
      inferd.ModelWorkerClient(URL) in an asyncio loop: a greedy 1-token
      completion through `await complete(...)` and through `async for` over
      stream(...), alternating; us per call to DIR/complete.txt and
      DIR/stream.txt.
  python_rt.py stats --path NAME FILE...
      Nearest-rank p50/p99 over the samples of the FILEs (one us value a
      line) as {"path","n","p50_us","p99_us"}, as bench/registry_rt.c
      prints them.
  python_rt.py chunks --path NAME FILE
      For the per-chunk summaries in FILE (JSON lines with p50_us, p99_us
      and n, as inferd-client-rt prints them): the medians of their p50 and
      p99, and their n summed, in the same form.

Every call is timed from the call to the whole answer (time.perf_counter_ns);
the first 20 calls of each path are a warm-up and are not kept.
"""
import argparse
import asyncio
import json
import os
import statistics
import time

PROMPT = "Once upon a time"
WARMUP = 20


def save(raw_dir, name, samples):
    with open(os.path.join(raw_dir, name + ".txt"), "a") as f:
        f.write("".join("%.3f\n" % s for s in samples))


def inproc(args):
    import inferd

    m = inferd.get_or_load(args.model, threads=1)
    clock = time.perf_counter_ns
    if args.tokens == 1:
        done, gen = [], []
        for i in range(WARMUP + args.requests):
            t0 = clock()
            out = m.complete(PROMPT, max_tokens=1, temperature=0)
            t1 = clock()
            n = 0
            for _ in m.generate(PROMPT, max_tokens=1, temperature=0):
                n += 1
            t2 = clock()
            if out["completion_tokens"] != 1 or n != 1:
                raise SystemExit("python_rt: a completion did not give 1 token")
            if i >= WARMUP:
                done.append((t1 - t0) / 1e3)
                gen.append((t2 - t1) / 1e3)
        save(args.raw_dir, "complete", done)
        save(args.raw_dir, "generate", gen)
    else:
        gen = []
        for i in range(WARMUP + args.requests):
            t0 = clock()
            n = 0
            for _ in m.generate(PROMPT, max_tokens=args.tokens, ignore_eos=True, seed=42):
                n += 1
            t1 = clock()
            if n != args.tokens:
                raise SystemExit("python_rt: a generation did not give --tokens tokens")
            if i >= WARMUP:
                gen.append((t1 - t0) / 1e3 / args.tokens)
        save(args.raw_dir, "generate", gen)
    m.close()


async def client_run(args):
    import inferd

    clock = time.perf_counter_ns
    done, stream = [], []
    async with inferd.ModelWorkerClient(args.url) as c:
        for i in range(WARMUP + args.requests):
            t0 = clock()
            out = await c.complete(PROMPT, max_tokens=1, temperature=0)
            t1 = clock()
            pieces = 0
            async for _ in c.stream(PROMPT, max_tokens=1, temperature=0):
                pieces += 1
            t2 = clock()
            if out["completion_tokens"] != 1:
                raise SystemExit("python_rt: a completion did not give 1 token")
            if i >= WARMUP:
                done.append((t1 - t0) / 1e3)
                stream.append((t2 - t1) / 1e3)
    save(args.raw_dir, "complete", done)
    save(args.raw_dir, "stream", stream)


async def infer_run(args):
    """ModelWorkerClient.infer of the identity model, one FP32 input of
    --bytes (output answered as binary data): shm="auto" (the input staged
    into the client's region) and shm="never" (binary data) alternating."""
    import numpy as np

    import inferd

    clock = time.perf_counter_ns
    x = np.arange(args.bytes // 4, dtype=np.float32)
    got = {"staged": [], "binary": []}
    async with inferd.ModelWorkerClient(args.url) as a, \
            inferd.ModelWorkerClient(args.url, shm="never") as b:
        for i in range(WARMUP + args.requests):
            for name, c in (("staged", a), ("binary", b)):
                t0 = clock()
                out = await c.infer("ident", {"INPUT0": x}, ["OUTPUT0"])
                t1 = clock()
                if c.last_via["INPUT0"] != name or out["OUTPUT0"].nbytes != x.nbytes:
                    raise SystemExit(f"python_rt: the {name} input went {c.last_via}")
                if i >= WARMUP:
                    got[name].append((t1 - t0) / 1e3)
    for name, v in got.items():
        save(args.raw_dir, name, v)


def pct(sorted_v, p):
    """Nearest rank, as bench/bench_util.h's bench_pct."""
    rank = max(1, (p * len(sorted_v) + 99) // 100)
    return sorted_v[rank - 1]


def stats(args):
    v = []
    for name in args.files:
        with open(name) as f:
            v.extend(float(line) for line in f if line.strip())
    if not v:
        raise SystemExit("python_rt: no samples in " + " ".join(args.files))
    v.sort()
    print(json.dumps({"path": args.path, "n": len(v), "p50_us": round(pct(v, 50), 1),
                      "p99_us": round(pct(v, 99), 1)}))


def chunks(args):
    with open(args.files[0]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise SystemExit("python_rt: no chunks in " + args.files[0])
    print(json.dumps({"path": args.path, "n": sum(r["n"] for r in rows),
                      "p50_us": round(statistics.median(r["p50_us"] for r in rows), 1),
                      "p99_us": round(statistics.median(r["p99_us"] for r in rows), 1)}))


def main():
    ap = argparse.ArgumentParser(description="the Python side of bench/python.sh")
    ap.add_argument("mode", choices=["inproc", "client", "infer", "stats", "chunks"])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--model")
    ap.add_argument("--url")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--bytes", type=int, default=1 << 20)
    ap.add_argument("--raw-dir", default=".")
    ap.add_argument("--path", default="")
    args = ap.parse_intermixed_args()
    if args.mode == "inproc":
        inproc(args)
    elif args.mode == "client":
        asyncio.run(client_run(args))
    elif args.mode == "infer":
        asyncio.run(infer_run(args))
    elif args.mode == "stats":
        stats(args)
    else:
        chunks(args)


if __name__ == "__main__":
    main()
