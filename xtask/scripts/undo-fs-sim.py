#!/usr/bin/env python3
"""What keeping an overwritten file costs the filesystem, without mcpsec.

Replays, from Python threads, the system calls of a 4 KiB `write_file` over
one existing file at N in flight, with an append-and-`fdatasync` audit record
before and after each call, in several variants of what happens to the
displaced file. mcpsec is not involved: the figures say what the filesystem
charges for each way of keeping (see BENCHMARKS.md, "Undo").

    python3 xtask/scripts/undo-fs-sim.py [--dir DIR] [--threads 16] [--seconds 3] [--rounds 3]

Variants:
  free       write a temporary file, fdatasync it, rename it over the old one
             (the old file is freed: what mcpsec does with undo off)
  exchange   swap the temporary file in with RENAME_EXCHANGE, unlink the old one
  same-dir   swap, then rename the old one to another name in the same directory
  trash      swap, rename the old one into a trash directory, chmod it 0600 and
             write a small manifest beside it (what mcpsec does with undo on)
  copy       swap, copy the old content into a new trash file, unlink the old one
"""
import argparse, ctypes, hashlib, json, os, shutil, statistics, tempfile, threading, time

libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
VARIANTS = ["free", "exchange", "same-dir", "trash", "copy"]


def renameat2(old_dir, old, new_dir, new, flags):
    if libc.renameat2(old_dir, old.encode(), new_dir, new.encode(), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def run(base, variant, threads, seconds):
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base + "/root")
    os.makedirs(base + "/trash")
    root = os.open(base + "/root", os.O_DIRECTORY)
    trash = os.open(base + "/trash", os.O_DIRECTORY)
    with open(base + "/root/f.txt", "w") as f:
        f.write("x")
    audit = os.open(base + "/audit.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lock, counter, done = threading.Lock(), [0], [0]
    data = b"y" * 4096
    end = time.time() + seconds

    def call(tid, n):
        with lock:
            counter[0] += 1
            seq = counter[0]
        os.write(audit, b'{"intent":%d}\n' % seq)
        os.fdatasync(audit)
        tmp = f".f.txt.{tid}.{n}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=root)
        os.write(fd, data)
        os.fdatasync(fd)
        os.close(fd)
        if variant == "free":
            os.rename(tmp, "f.txt", src_dir_fd=root, dst_dir_fd=root)
        else:
            renameat2(root, tmp, root, "f.txt", RENAME_EXCHANGE)
            fd = os.open(tmp, os.O_RDONLY, dir_fd=root)
            old = os.read(fd, 1 << 16)
            hashlib.sha256(old).hexdigest()
            os.close(fd)
            if variant == "exchange":
                os.unlink(tmp, dir_fd=root)
            elif variant == "same-dir":
                renameat2(root, tmp, root, f".kept.{seq}", RENAME_NOREPLACE)
            elif variant == "trash":
                renameat2(root, tmp, trash, str(seq), RENAME_NOREPLACE)
                os.chmod(str(seq), 0o600, dir_fd=trash)
                manifest = json.dumps({"v": 2, "seq": seq, "path": "f.txt", "sha256": "0" * 64, "pad": "x" * 300})
                fd = os.open(f"{seq}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=trash)
                os.write(fd, manifest.encode())
                os.close(fd)
            elif variant == "copy":
                fd = os.open(str(seq), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=trash)
                os.write(fd, old)
                os.close(fd)
                os.unlink(tmp, dir_fd=root)
        os.write(audit, b'{"result":%d}\n' % seq)
        os.fdatasync(audit)

    def worker(tid):
        n = 0
        while time.time() < end:
            call(tid, n)
            n += 1
            with lock:
                done[0] += 1

    started = time.time()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    rate = done[0] / (time.time() - started)
    for fd in (root, trash, audit):
        os.close(fd)
    shutil.rmtree(base, ignore_errors=True)
    os.sync()
    return rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to work (default: a temporary directory under target/)")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    parent = a.dir or os.path.join(here, "..", "..", "target")
    os.makedirs(parent, exist_ok=True)
    base = tempfile.mkdtemp(prefix="undo-fs-sim-", dir=parent)
    rates = {v: [] for v in VARIANTS}
    print(f"load at start: {os.getloadavg()[0]:.2f}; {a.threads} in flight, {a.seconds}s a run, {a.rounds} rounds")
    for _ in range(a.rounds):
        for v in VARIANTS:
            rates[v].append(run(base + "/w", v, a.threads, a.seconds))
    free = statistics.median(rates["free"])
    for v in VARIANTS:
        m = statistics.median(rates[v])
        runs = ", ".join(f"{r:.0f}" for r in rates[v])
        print(f"{v:9} {m:7.0f} calls/s  ({1 - m / free:+.0%} against free)   runs: {runs}")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
