#!/usr/bin/python3
"""What fresh memory costs this machine: maps GIB GiB of anonymous memory one
GiB at a time, keeps each mapped, writes one byte per 4 KiB page and prints
the CPU time (user + system) per MiB of each GiB.

On the 2-core Debian VM ironlab is benched on, the first ~3 GiB cost
0.8 ms/MiB and every GiB after them 3.0 ms/MiB: the host backs the VM's
memory lazily, so a page the guest has not used lately costs a host fault on
its first touch (a tmpfs or ext4 write of new page cache pays the same).
Any phase whose memory (heap or page cache) grows past that budget with N
stops being linear in N on such a machine; see README, "every phase linear
in N".

Usage: scripts/memory-touch.py [GIB]   (default 8; needs GIB GiB free)
"""
import mmap
import resource
import sys


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return
    try:
        gib = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    except ValueError:
        sys.exit(f"memory-touch: GIB must be a whole number of GiB, not {sys.argv[1]!r}")
    if gib < 1 or len(sys.argv) > 2:
        sys.exit("memory-touch: usage: scripts/memory-touch.py [GIB] (GIB at least 1)")
    kept, page = [], mmap.PAGESIZE
    for g in range(gib):
        c0 = cpu()
        m = mmap.mmap(-1, 1 << 30)
        for off in range(0, 1 << 30, page):
            m[off] = 1
        kept.append(m)
        print(f"GiB {g + 1:2d}: {(cpu() - c0) * 1000 / 1024:.3f} ms CPU/MiB", flush=True)


if __name__ == "__main__":
    main()
