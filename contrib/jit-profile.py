#!/usr/bin/env python3
"""Instruction-level profile of a JIT-compiled XDP program under the bench's replay loop.

    contrib/jit-profile.py target/release/bench "DR TCP established" [PROGRAM] [TOP]

Runs `BENCH --profile CASE` under `perf record -g`, and while it runs reads the JIT image
map of the bench's program named PROGRAM ("director" by default) from the kernel:
BPF_OBJ_GET_INFO_BY_FD gives, for every line-info record of the program, the address of
its JIT-compiled code and the translated (xlated) instruction it starts. Each perf sample
inside the program is then charged to the line-info range it fell in, printed with its
source line (from `bpftool prog dump xlated`) and first instructions.

Why not `perf annotate` or `bpftool prog dump jited`: Debian's perf and bpftool are built
without libbfd and refuse to disassemble BPF JIT images. Samples are cpu-clock (a VM has
no PMU): expect a few instructions of skid. Needs root, perf and bpftool.
"""
import bisect
import collections
import ctypes
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

SYS_BPF = 321  # x86_64
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD = 13, 15
INFO_LEN = 232  # struct bpf_prog_info up to attach_btf_id (kernel 6.x)
libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    r = libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def prog_info(fd, fill=b""):
    info = ctypes.create_string_buffer(bytes(fill).ljust(INFO_LEN, b"\0"), INFO_LEN)
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("IIQ", fd, INFO_LEN, ctypes.addressof(info)) + bytes(48))
    return info.raw


def find_program(pid, name, timeout=60):
    """The id of the program called `name` that process `pid` holds a descriptor of."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            for f in os.listdir(f"/proc/{pid}/fdinfo"):
                try:
                    t = open(f"/proc/{pid}/fdinfo/{f}").read()
                except OSError:
                    continue
                m = re.search(r"prog_id:\s*(\d+)", t)
                if not m:
                    continue
                out = subprocess.run(["bpftool", "-j", "prog", "show", "id", m.group(1)],
                                     capture_output=True, text=True).stdout
                if out and json.loads(out).get("name") == name:
                    return int(m.group(1))
        except FileNotFoundError:
            return None
        time.sleep(0.1)
    return None


def jit_map(prog_id):
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("I", prog_id) + bytes(60))
    raw = prog_info(fd)
    nks, nfl = struct.unpack_from("II", raw, 104)
    nli, = struct.unpack_from("I", raw, 148)
    njli, = struct.unpack_from("I", raw, 168)
    lrs, jlrs = struct.unpack_from("II", raw, 172)
    ks, fl = (ctypes.c_uint64 * nks)(), (ctypes.c_uint32 * nfl)()
    li, jli = ctypes.create_string_buffer(nli * lrs), (ctypes.c_uint64 * njli)()
    b = bytearray(INFO_LEN)
    struct.pack_into("=IIQQ", b, 104, nks, nfl, ctypes.addressof(ks), ctypes.addressof(fl))
    struct.pack_into("=I", b, 148, nli)
    struct.pack_into("=QQI", b, 152, ctypes.addressof(li), ctypes.addressof(jli), njli)
    struct.pack_into("=II", b, 172, lrs, jlrs)
    prog_info(fd, b)
    os.close(fd)
    insns = [struct.unpack_from("I", li.raw, i * lrs)[0] for i in range(nli)]
    xlated = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id)],
                            capture_output=True, text=True).stdout
    return list(ks), list(fl), insns, list(jli), xlated


def main():
    bench, case = sys.argv[1], sys.argv[2]
    name = sys.argv[3] if len(sys.argv) > 3 else "director"
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    data = tempfile.mktemp(suffix=".perf.data")
    b = subprocess.Popen([bench, "--profile", case], stderr=subprocess.PIPE, text=True)
    p = subprocess.Popen(["perf", "record", "-q", "-g", "-o", data, "-p", str(b.pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prog_id = find_program(b.pid, name)
    if prog_id is None:
        sys.exit(f"no program {name!r} loaded by the bench")
    ksyms, lens, insns, addrs, xlated = jit_map(prog_id)
    err = b.communicate()[1]
    p.send_signal(2)
    p.wait()
    print("".join(l + "\n" for l in err.splitlines() if l.startswith("profile:")), end="")
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"],
                            capture_output=True, text=True).stdout
    os.unlink(data)
    order = sorted(range(len(addrs)), key=lambda i: addrs[i])
    starts = [addrs[i] for i in order]
    loop, outside, ranges = 0, collections.Counter(), collections.Counter()
    for block in script.split("\n\n"):
        frames = [l.split(None, 1) for l in block.strip().split("\n") if l.strip()]
        syms = [f[1] if len(f) > 1 else "?" for f in frames]
        if not frames or not any("bpf_test_run" in s for s in syms):
            continue
        loop += 1
        ip = int(frames[0][0], 16)
        if not any(k <= ip < k + n for k, n in zip(ksyms, lens)):
            outside[syms[0]] += 1
            continue
        k = bisect.bisect_right(starts, ip) - 1
        ranges[order[k] if k >= 0 else 0] += 1
    inside = sum(ranges.values())
    if not loop:
        sys.exit("no sample in the replay loop")
    print(f"replay-loop samples {loop}: program {name} {100 * inside / loop:.1f}%")
    for s, c in outside.most_common(16):
        print(f"  {100 * c / loop:5.1f}%  {s}")
    text, source, cur = {}, {}, None
    for line in xlated.split("\n"):
        m = re.match(r"\s*(\d+): (.*)", line)
        if m:
            text[int(m.group(1))] = m.group(2)
            source.setdefault(int(m.group(1)), cur)
        elif line.startswith(";"):
            cur = line[2:].strip()
    print(f"\nhottest line-info ranges (share of the loop's samples), xlated insns: source")
    for i, c in ranges.most_common(top):
        a = insns[i]
        later = [x for x in insns if x > a]
        end = min(later) if later else a + 1
        print(f"{100 * c / loop:5.1f}%  insn {a}-{end - 1}: {source.get(a)}")
        for k in range(a, min(end, a + 4)):
            if k in text:
                print(f"           {k:5d}: {text[k]}")


if __name__ == "__main__":
    main()
