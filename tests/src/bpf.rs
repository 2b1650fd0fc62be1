//! The replay harness: times any XDP program of the object over many iterations of one
//! BPF_PROG_TEST_RUN call while giving it a pristine input packet every iteration.
//!
//! With `repeat > 1` the kernel does not restore the packet between iterations (it
//! reuses one buffer, bytes and data pointers included): a program that rewrites or encapsulates sees its own output
//! from the second iteration on. So the timed program is a small *replay* program,
//! assembled here, that on every iteration
//! 1. undoes any head adjustment of the previous iteration (`bpf_xdp_adjust_head` by the
//!    difference between the current and the original length: IPIP grows the frame by 20),
//! 2. copies the original frame back from an array map (`bpf_xdp_store_bytes`),
//! 3. optionally stamps a per-iteration counter into the frame (source port and the low
//!    two bytes of the source address, so every iteration is a different flow: a new
//!    flow, or one of `cycle` established flows),
//! 4. tail-calls the program under test (a one-slot prog array).
//!
//! The replay's own cost is measured the same way with the floor program as the target
//! and subtracted; the program under test counts every outcome in its own per-CPU
//! counters, which the caller compares before and after, so every iteration's verdict
//! is checked, not only the last one.
//!
//! Maps and the program are created with raw bpf(2) calls: aya 0.14 cannot load a
//! program from instructions, and nothing here needs BTF.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use anyhow::{Context as _, Result, bail};
use director_common::conntable::{Conn, FlowKey};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;

const MAP_TYPE_ARRAY: u32 = 2;
const MAP_TYPE_PROG_ARRAY: u32 = 3;
const PROG_TYPE_XDP: u32 = 6;
/// `expected_attach_type` aya gives XDP programs; tail calls need the same.
const ATTACH_TYPE_XDP: u32 = 37;

const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_TAIL_CALL: i32 = 12;
const HELPER_XDP_ADJUST_HEAD: i32 = 44;
const HELPER_XDP_STORE_BYTES: i32 = 190;

/// Largest frame the replay can restore (the value size of its frame map).
pub const MAX_FRAME: usize = 256;
/// Offset of the iteration counter in the frame map's value (after the frame).
const COUNTER_OFF: i16 = MAX_FRAME as i16;
const VALUE_SIZE: u32 = MAX_FRAME as u32 + 8;

fn sys_bpf(cmd: libc::c_long, attr: &mut [u64]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-padded bpf_attr of the size we pass; the kernel reads and
    // writes only within it, and every pointer in it points to memory the caller owns
    // for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `union bpf_attr` as 8-byte words (the largest member we use fits in 16 words).
type Attr = [u64; 16];

fn put_u32(attr: &mut Attr, byte_off: usize, v: u32) {
    let word = &mut attr[byte_off / 8];
    let shift = (byte_off % 8) * 8;
    *word = (*word & !(0xffff_ffffu64 << shift)) | ((v as u64) << shift);
}

fn map_create(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> Result<OwnedFd> {
    map_create_with_flags(map_type, key_size, value_size, max_entries, 0)
}

fn map_create_with_flags(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> Result<OwnedFd> {
    let mut a: Attr = [0; 16];
    put_u32(&mut a, 0, map_type);
    put_u32(&mut a, 4, key_size);
    put_u32(&mut a, 8, value_size);
    put_u32(&mut a, 12, max_entries);
    put_u32(&mut a, 16, map_flags);
    let fd = sys_bpf(BPF_MAP_CREATE, &mut a).context("bpf(BPF_MAP_CREATE)")?;
    // SAFETY: the kernel just returned this new descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn map_update(map: RawFd, key: &[u8], value: &[u8]) -> Result<()> {
    let mut a: Attr = [0; 16];
    put_u32(&mut a, 0, map as u32);
    a[1] = key.as_ptr() as u64;
    a[2] = value.as_ptr() as u64;
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).context("bpf(BPF_MAP_UPDATE_ELEM)")?;
    Ok(())
}

fn map_lookup(map: RawFd, key: &[u8], value: &mut [u8]) -> Result<()> {
    let mut a: Attr = [0; 16];
    put_u32(&mut a, 0, map as u32);
    a[1] = key.as_ptr() as u64;
    a[2] = value.as_mut_ptr() as u64;
    sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut a).context("bpf(BPF_MAP_LOOKUP_ELEM)")?;
    Ok(())
}

/// One eBPF instruction.
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Insn {
            code,
            regs: (src << 4) | (dst & 0xf),
            off,
            imm,
        }
    }
    fn bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

/// A tiny assembler: just the instructions the replay program needs.
#[derive(Default)]
struct Asm(Vec<Insn>);

impl Asm {
    fn mov_reg(&mut self, dst: u8, src: u8) {
        self.0.push(Insn::new(0xbf, dst, src, 0, 0));
    }
    fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.0.push(Insn::new(0xb7, dst, 0, 0, imm));
    }
    fn add_imm(&mut self, dst: u8, imm: i32) {
        self.0.push(Insn::new(0x07, dst, 0, 0, imm));
    }
    fn sub_reg(&mut self, dst: u8, src: u8) {
        self.0.push(Insn::new(0x1f, dst, src, 0, 0));
    }
    fn rsh_imm(&mut self, dst: u8, imm: i32) {
        self.0.push(Insn::new(0x77, dst, 0, 0, imm));
    }
    fn mul_imm(&mut self, dst: u8, imm: i32) {
        self.0.push(Insn::new(0x27, dst, 0, 0, imm));
    }
    fn ldx_dw(&mut self, dst: u8, src: u8, off: i16) {
        self.0.push(Insn::new(0x79, dst, src, off, 0));
    }
    fn mod_imm(&mut self, dst: u8, imm: i32) {
        self.0.push(Insn::new(0x97, dst, 0, 0, imm));
    }
    fn ldx_w(&mut self, dst: u8, src: u8, off: i16) {
        self.0.push(Insn::new(0x61, dst, src, off, 0));
    }
    fn stx_w(&mut self, dst: u8, src: u8, off: i16) {
        self.0.push(Insn::new(0x63, dst, src, off, 0));
    }
    fn stx_h(&mut self, dst: u8, src: u8, off: i16) {
        self.0.push(Insn::new(0x6b, dst, src, off, 0));
    }
    fn st_w(&mut self, dst: u8, off: i16, imm: i32) {
        self.0.push(Insn::new(0x62, dst, 0, off, imm));
    }
    fn st_dw(&mut self, dst: u8, off: i16, imm: i32) {
        self.0.push(Insn::new(0x7a, dst, 0, off, imm));
    }
    /// `dst = map` (a map fd, relocated by the kernel).
    fn ld_map(&mut self, dst: u8, map: RawFd) {
        self.0.push(Insn::new(0x18, dst, 1, 0, map));
        self.0.push(Insn::new(0, 0, 0, 0, 0));
    }
    fn call(&mut self, helper: i32) {
        self.0.push(Insn::new(0x85, 0, 0, 0, helper));
    }
    /// `if dst != 0 goto +off` / `if dst == 0 goto +off`; returns the index to patch.
    fn jne0(&mut self, dst: u8) -> usize {
        self.0.push(Insn::new(0x55, dst, 0, 0, 0));
        self.0.len() - 1
    }
    fn jeq0(&mut self, dst: u8) -> usize {
        self.0.push(Insn::new(0x15, dst, 0, 0, 0));
        self.0.len() - 1
    }
    fn exit(&mut self) {
        self.0.push(Insn::new(0x95, 0, 0, 0, 0));
    }
    fn here(&self) -> usize {
        self.0.len()
    }
    fn patch(&mut self, at: usize, target: usize) {
        self.0[at].off = (target as isize - at as isize - 1) as i16;
    }
}

/// How the replay stamps each iteration.
#[derive(Clone, Copy, Debug)]
pub enum Stamp {
    /// The same frame every iteration (an established flow, a reply, the floor).
    Fixed,
    /// A counter in the source port and the low two bytes of the source address (of an
    /// IPv4 frame; in an IPv6 frame both halves land in the source address): a
    /// different flow every iteration (stamps 1, 2, 3...; wraps after 2^32), or with
    /// `cycle: Some(n)` the stamps 1..=n in turn (n established flows).
    Counter { cycle: Option<u32> },
}

/// Byte offsets in an Ethernet/IPv4 (no options)/TCP or UDP frame.
const IP_SRC_LO_OFF: i16 = 14 + 12 + 2;
const L4_SPORT_OFF: i16 = 14 + 20;

/// A replay program bound to one target program and one frame.
pub struct Replay {
    prog: OwnedFd,
    frames: OwnedFd,
    _targets: OwnedFd,
    frame: Vec<u8>,
    ifindex: u32,
}

/// What one timed call returned.
#[derive(Clone, Copy, Debug)]
pub struct Timed {
    /// Verdict of the last iteration.
    pub retval: u32,
    /// Mean ns per iteration, as the kernel measured it.
    pub ns: f64,
}

impl Replay {
    /// Build a replay of `frame` (ingress `ifindex` in its xdp_md) into `target`.
    pub fn new(target: &impl AsFd, frame: &[u8], ifindex: u32, stamp: Stamp) -> Result<Self> {
        if frame.len() > MAX_FRAME || frame.len() < 54 {
            bail!("replay frames must be 54..={MAX_FRAME} bytes");
        }
        let frames = map_create(MAP_TYPE_ARRAY, 4, VALUE_SIZE, 1)?;
        let targets = map_create(MAP_TYPE_PROG_ARRAY, 4, 4, 1)?;
        let target_fd = target.as_fd().as_raw_fd() as u32;
        map_update(
            targets.as_raw_fd(),
            &0u32.to_ne_bytes(),
            &target_fd.to_ne_bytes(),
        )
        .context("putting the program under test in the replay's prog array")?;

        let len = frame.len() as i32;
        let mut a = Asm::default();
        // r6 = ctx; r3 = data_end - data (current length).
        a.mov_reg(6, 1);
        a.ldx_w(2, 6, 0);
        a.ldx_w(3, 6, 4);
        a.sub_reg(3, 2);
        // adjust_head(ctx, len_now - len): back to the original start.
        a.add_imm(3, -len);
        a.mov_reg(1, 6);
        a.mov_reg(2, 3);
        a.call(HELPER_XDP_ADJUST_HEAD);
        let j1 = a.jne0(0);
        // r7 = &frames[0]
        a.st_w(10, -4, 0);
        a.ld_map(1, frames.as_raw_fd());
        a.mov_reg(2, 10);
        a.add_imm(2, -4);
        a.call(HELPER_MAP_LOOKUP_ELEM);
        let j2 = a.jeq0(0);
        a.mov_reg(7, 0);
        if let Stamp::Counter { cycle } = stamp {
            a.ldx_w(1, 7, COUNTER_OFF);
            a.add_imm(1, 1);
            if let Some(n) = cycle {
                a.mod_imm(1, n as i32);
            }
            a.stx_w(7, 1, COUNTER_OFF);
            if cycle.is_some() {
                // Stamps 1..=n, the same as the first n of an uncycled run.
                a.add_imm(1, 1);
            }
            a.stx_h(7, 1, L4_SPORT_OFF);
            a.rsh_imm(1, 16);
            a.stx_h(7, 1, IP_SRC_LO_OFF);
        }
        // store_bytes(ctx, 0, r7, len)
        a.mov_reg(1, 6);
        a.mov_imm(2, 0);
        a.mov_reg(3, 7);
        a.mov_imm(4, len);
        a.call(HELPER_XDP_STORE_BYTES);
        let j3 = a.jne0(0);
        // tail_call(ctx, targets, 0); falls through only if the call failed.
        a.mov_reg(1, 6);
        a.ld_map(2, targets.as_raw_fd());
        a.mov_imm(3, 0);
        a.call(HELPER_TAIL_CALL);
        let fail = a.here();
        a.mov_imm(0, 0); // XDP_ABORTED
        a.exit();
        for j in [j1, j2, j3] {
            a.patch(j, fail);
        }
        let prog = load_xdp(&a.0).context("loading the replay program")?;

        let r = Replay {
            prog,
            frames,
            _targets: targets,
            frame: frame.to_vec(),
            ifindex,
        };
        r.set_counter(0)?;
        Ok(r)
    }

    /// Set the iteration counter (the next iteration stamps `value + 1`).
    pub fn set_counter(&self, value: u32) -> Result<()> {
        let mut v = vec![0u8; VALUE_SIZE as usize];
        v[..self.frame.len()].copy_from_slice(&self.frame);
        // The stamped bytes are rewritten every iteration; the counter lives after the frame.
        v[MAX_FRAME..MAX_FRAME + 4].copy_from_slice(&value.to_ne_bytes());
        map_update(self.frames.as_raw_fd(), &0u32.to_ne_bytes(), &v)
    }

    /// The current counter.
    pub fn counter(&self) -> Result<u32> {
        let mut v = vec![0u8; VALUE_SIZE as usize];
        map_lookup(self.frames.as_raw_fd(), &0u32.to_ne_bytes(), &mut v)?;
        Ok(u32::from_ne_bytes(v[MAX_FRAME..MAX_FRAME + 4].try_into()?))
    }

    /// Run `repeat` iterations in one call; `out` receives the last iteration's frame.
    pub fn run(&self, repeat: u32, out: &mut Vec<u8>) -> Result<Timed> {
        out.clear();
        out.resize(self.frame.len() + 64, 0);
        let r = test_run(&self.prog, &self.frame, self.ifindex, repeat, out)?;
        out.truncate(r.2 as usize);
        Ok(Timed {
            retval: r.0,
            ns: r.1 as f64,
        })
    }
}

/// BPF_PROG_TEST_RUN on `prog`: (retval, mean ns per iteration, output size).
pub fn test_run(
    prog: &impl AsFd,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    out: &mut [u8],
) -> Result<(u32, u32, u32)> {
    // xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let mut a: Attr = [0; 16];
    put_u32(&mut a, 0, prog.as_fd().as_raw_fd() as u32);
    put_u32(&mut a, 8, frame.len() as u32); // data_size_in
    put_u32(&mut a, 12, out.len() as u32); // data_size_out
    a[2] = frame.as_ptr() as u64; // data_in
    a[3] = out.as_mut_ptr() as u64; // data_out
    put_u32(&mut a, 32, repeat);
    put_u32(&mut a, 40, std::mem::size_of_val(&ctx) as u32); // ctx_size_in
    a[6] = ctx.as_ptr() as u64; // ctx_in
    sys_bpf(BPF_PROG_TEST_RUN, &mut a).context("bpf(BPF_PROG_TEST_RUN)")?;
    let retval = (a[0] >> 32) as u32;
    let size_out = (a[1] >> 32) as u32;
    let duration = (a[4] >> 32) as u32;
    Ok((retval, duration, size_out))
}

fn load_xdp(insns: &[Insn]) -> Result<OwnedFd> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.bytes()).collect();
    let license = b"GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut a: Attr = [0; 16];
    put_u32(&mut a, 0, PROG_TYPE_XDP);
    put_u32(&mut a, 4, insns.len() as u32);
    a[1] = code.as_ptr() as u64;
    a[2] = license.as_ptr() as u64;
    put_u32(&mut a, 24, 1); // log_level
    put_u32(&mut a, 28, log.len() as u32);
    a[4] = log.as_mut_ptr() as u64;
    let name = b"bench_replay\0\0\0\0";
    a[6] = u64::from_ne_bytes(name[0..8].try_into()?);
    a[7] = u64::from_ne_bytes(name[8..16].try_into()?);
    put_u32(&mut a, 68, ATTACH_TYPE_XDP); // expected_attach_type
    match sys_bpf(BPF_PROG_LOAD, &mut a) {
        // SAFETY: the kernel just returned this new descriptor to us.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            bail!(
                "bpf(BPF_PROG_LOAD): {e}; verifier log:\n{}",
                String::from_utf8_lossy(&log[..end])
            )
        }
    }
}

/// What one bpf(2) map lookup costs from userspace on the machine running it (ns per lookup, one
/// sample per batch): the unit of every control-plane operation, which reads and writes
/// maps one entry per call.
pub fn map_lookup_cost() -> Result<Vec<f64>> {
    let map = map_create(MAP_TYPE_ARRAY, 4, 8, 1)?;
    let mut v = [0u8; 8];
    let mut per = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        for _ in 0..500 {
            map_lookup(map.as_raw_fd(), &0u32.to_ne_bytes(), &mut v)?;
        }
        per.push(t.elapsed().as_nanos() as f64 / 500.0);
    }
    Ok(per)
}

/// Kinds of hash table an insert can go into, for [`insert_cost`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// No insert at all: what the measuring program costs by itself.
    None,
    /// BPF_MAP_TYPE_HASH (preallocated).
    Hash,
    /// BPF_MAP_TYPE_LRU_HASH with one LRU list shared by all CPUs.
    LruCommon,
    /// BPF_MAP_TYPE_LRU_HASH with BPF_F_NO_COMMON_LRU (the director's connection table
    /// until map layout 3).
    LruPerCpu,
    /// An array of 192-byte buckets (the director's connection table): a bucket picked
    /// by a multiplicative hash, its line of keys read, a key and the line of the claim
    /// and first entry written (no atomics).
    ArrayBucket,
}

impl TableKind {
    pub fn label(self) -> &'static str {
        match self {
            TableKind::None => "no insert (the measuring program alone)",
            TableKind::Hash => "hash map (preallocated)",
            TableKind::LruCommon => "LRU hash, common LRU list",
            TableKind::LruPerCpu => {
                "LRU hash, BPF_F_NO_COMMON_LRU (the director's table until layout 3)"
            }
            TableKind::ArrayBucket => "array of 4-way buckets (the director's table)",
        }
    }
}

/// ns per insert of a new key into a table with the connection table's key and value
/// sizes ([`FlowKey`], [`Conn`]) into a table of `entries`, measured by a minimal XDP program through
/// BPF_PROG_TEST_RUN: one sample per `batch` inserts, `samples` samples, from the
/// calling thread's CPU. Returns the per-sample ns per iteration.
pub fn insert_cost(kind: TableKind, entries: u32, batch: u32, samples: usize) -> Result<Vec<f64>> {
    const MAP_TYPE_HASH: u32 = 1;
    const MAP_TYPE_LRU_HASH: u32 = 9;
    const NO_COMMON_LRU: u32 = 2;
    const HELPER_MAP_UPDATE_ELEM: i32 = 2;
    const KEY: u32 = std::mem::size_of::<FlowKey>() as u32;
    const VALUE: u32 = std::mem::size_of::<Conn>() as u32;
    const {
        assert!(
            KEY <= 40 && VALUE <= 40,
            "the program zeroes 40 bytes of each"
        )
    };
    let counter = map_create(MAP_TYPE_ARRAY, 4, 8, 1)?;
    let table = match kind {
        TableKind::None => None,
        TableKind::ArrayBucket => Some(map_create(MAP_TYPE_ARRAY, 4, 192, entries / 4)?),
        TableKind::Hash => Some(map_create(MAP_TYPE_HASH, KEY, VALUE, entries)?),
        TableKind::LruCommon => Some(map_create(MAP_TYPE_LRU_HASH, KEY, VALUE, entries)?),
        TableKind::LruPerCpu => Some(map_create_with_flags(
            MAP_TYPE_LRU_HASH,
            KEY,
            VALUE,
            entries,
            NO_COMMON_LRU,
        )?),
    };
    let mut a = Asm::default();
    // r1 = ++counter
    a.st_w(10, -4, 0);
    a.ld_map(1, counter.as_raw_fd());
    a.mov_reg(2, 10);
    a.add_imm(2, -4);
    a.call(HELPER_MAP_LOOKUP_ELEM);
    let j = a.jeq0(0);
    a.ldx_w(1, 0, 0);
    a.add_imm(1, 1);
    a.stx_w(0, 1, 0);
    // key at r10-48 (up to 40 bytes, the counter in its first 4), value at r10-96
    for off in [-48i16, -40, -32, -24, -16, -96, -88, -80, -72, -64] {
        a.st_dw(10, off, 0);
    }
    a.stx_w(10, 1, -48);
    if let (Some(t), TableKind::ArrayBucket) = (&table, kind) {
        a.mul_imm(1, -1640531535);
        a.mod_imm(1, (entries / 4) as i32);
        a.stx_w(10, 1, -8);
        a.ld_map(1, t.as_raw_fd());
        a.mov_reg(2, 10);
        a.add_imm(2, -8);
        a.call(HELPER_MAP_LOOKUP_ELEM);
        let j2 = a.jeq0(0);
        a.ldx_dw(3, 0, 0);
        a.ldx_dw(4, 0, 16);
        a.ldx_dw(5, 0, 32);
        a.ldx_dw(3, 0, 48);
        for off in [0i16, 8, 64, 72, 80] {
            a.st_dw(0, off, 1);
        }
        let end = a.here();
        a.patch(j2, end);
    } else if let Some(t) = &table {
        a.ld_map(1, t.as_raw_fd());
        a.mov_reg(2, 10);
        a.add_imm(2, -48);
        a.mov_reg(3, 10);
        a.add_imm(3, -96);
        a.mov_imm(4, 0);
        a.call(HELPER_MAP_UPDATE_ELEM);
    }
    let out = a.here();
    a.mov_imm(0, 2); // XDP_PASS
    a.exit();
    a.patch(j, out);
    let prog = load_xdp(&a.0).context("loading the insert-cost program")?;
    let frame = [0u8; 64];
    let mut buf = [0u8; 128];
    let mut ns = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (rv, t, _) = test_run(&prog, &frame, 0, batch, &mut buf)?;
        if rv != 2 {
            bail!("insert-cost program returned {rv}");
        }
        ns.push(t as f64);
    }
    Ok(ns)
}
