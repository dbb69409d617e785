//! Reference search in memory with `storepatch_scan::Scanner`.
//!
//! Every input is generated deterministically, so numbers from different machines compare:
//!
//! - `no_refs`: 8 MiB that look like a virtualenv (Python source, bytecode-like binary runs with
//!   many zero bytes, `/usr/lib/...` paths) and hold no store path. This is the common case: most
//!   bytes of a tree hold nothing, so the prefix search must run near memory speed.
//! - `dense_refs`: 1 MiB with a store path about every 200 bytes (RUNPATHs, `RECORD` files).
//! - `many_candidates`: the `no_refs` input plus one bare hash every 64 KiB, searched for 2000
//!   candidate hash parts (bare-hash mode, as Nix scans for a closure's hashes), and the cost of
//!   building that scanner.
//! - `stream`: `scan_reader` with 64 KiB chunks against one `scan` of the whole buffer.
use std::hint::black_box;
use std::io::Cursor;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use storepatch_core::{HashPart, NIX_BASE32_ALPHABET, StoreDir, StorePath};
use storepatch_scan::Scanner;

const MIB: usize = 1024 * 1024;
const STORE_DIR: &str = "/nix/store";

/// A small deterministic generator (splitmix64), so inputs do not depend on a crate's version.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value ^ (value >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn hash(&mut self) -> [u8; 32] {
        std::array::from_fn(|_| NIX_BASE32_ALPHABET[self.below(NIX_BASE32_ALPHABET.len())])
    }
}

const SOURCE_LINES: &[&str] = &[
    "import os\n",
    "from collections.abc import Mapping\n",
    "    def __init__(self, path, *, mode=0o644):\n",
    "        self._path = os.fspath(path)\n",
    "        return _lib.call(self._handle, len(buffer))\n",
    "# Licensed under the Apache License, Version 2.0\n",
    "    raise ValueError(f\"bad value: {value!r}\")\n",
    "_LIB_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/local/lib']\n",
    "\"\"\"Return the configuration as a dict.\"\"\"\n",
    "\n",
];

/// `len` bytes of source text and binary runs, with no store path in them.
fn realistic_bytes(random: &mut Random, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 4096);
    while out.len() < len {
        if random.below(3) == 0 {
            // A binary run: mostly small values and zeros, like code and relocation tables.
            let run = 256 + random.below(4096);
            for _ in 0..run {
                let value = random.next();
                out.push(if value.is_multiple_of(4) {
                    0
                } else {
                    (value >> 8) as u8
                });
            }
            out.extend_from_slice(b"\0/usr/lib/libc.so.6\0GLIBC_2.34\0");
        } else {
            for _ in 0..(4 + random.below(40)) {
                out.extend_from_slice(SOURCE_LINES[random.below(SOURCE_LINES.len())].as_bytes());
            }
        }
    }
    out.truncate(len);
    out
}

fn scanner(candidates: Vec<StorePath>) -> Scanner {
    let store_dir = StoreDir::new(STORE_DIR).expect("valid store dir");
    Scanner::builder(store_dir).candidates(candidates).build()
}

fn candidates(random: &mut Random, count: usize) -> Vec<StorePath> {
    (0..count)
        .map(|index| {
            let hash = HashPart::parse(&random.hash()).expect("nix-base32 hash");
            StorePath::new(hash, format!("package-{index}-1.0"))
        })
        .collect()
}

/// `realistic_bytes` with a store path written over it about every `spacing` bytes.
fn with_paths(random: &mut Random, len: usize, spacing: usize, paths: &[StorePath]) -> Vec<u8> {
    let mut bytes = realistic_bytes(random, len);
    let mut at = random.below(spacing);
    while at + 128 < len {
        let path = &paths[random.below(paths.len())];
        let mut text = format!("{STORE_DIR}/{}-", path.hash().as_str()).into_bytes();
        text.extend_from_slice(path.name());
        text.extend_from_slice(b"/lib:");
        bytes[at..at + text.len()].copy_from_slice(&text);
        at += spacing / 2 + random.below(spacing);
    }
    bytes
}

fn no_refs(criterion: &mut Criterion) {
    let mut random = Random(1);
    let haystack = realistic_bytes(&mut random, 8 * MIB);
    let path_only = scanner(Vec::new());
    assert!(path_only.scan(&haystack).is_empty());
    let mut group = criterion.benchmark_group("no_refs");
    group.throughput(Throughput::Bytes(haystack.len() as u64));
    group.bench_function("8MiB", |bencher| {
        bencher.iter(|| path_only.scan(black_box(&haystack)));
    });
    group.finish();
}

fn dense_refs(criterion: &mut Criterion) {
    let mut random = Random(2);
    let paths = candidates(&mut random, 50);
    let haystack = with_paths(&mut random, MIB, 200, &paths);
    let path_only = scanner(Vec::new());
    let found = path_only.scan(&haystack).len();
    assert!(found > MIB / 400, "only {found} references");
    let mut group = criterion.benchmark_group("dense_refs");
    group.throughput(Throughput::Bytes(haystack.len() as u64));
    group.bench_function("1MiB_every_200B", |bencher| {
        bencher.iter(|| path_only.scan(black_box(&haystack)));
    });
    group.finish();
}

fn many_candidates(criterion: &mut Criterion) {
    let mut random = Random(3);
    let paths = candidates(&mut random, 2000);
    let mut haystack = realistic_bytes(&mut random, 8 * MIB);
    for at in (1000..haystack.len() - 64).step_by(64 * 1024) {
        let hash = paths[random.below(paths.len())].hash().as_bytes();
        haystack[at..at + 32].copy_from_slice(hash);
    }
    let bare = scanner(paths.clone());
    assert_eq!(bare.scan(&haystack).len(), 128);
    let mut group = criterion.benchmark_group("many_candidates");
    group.throughput(Throughput::Bytes(haystack.len() as u64));
    group.bench_function("8MiB_2000_hashes", |bencher| {
        bencher.iter(|| bare.scan(black_box(&haystack)));
    });
    group.throughput(Throughput::Elements(paths.len() as u64));
    group.sample_size(10);
    group.bench_function("build_2000_hashes", |bencher| {
        bencher.iter(|| scanner(black_box(paths.clone())));
    });
    group.finish();
}

fn stream(criterion: &mut Criterion) {
    let mut random = Random(4);
    let paths = candidates(&mut random, 20);
    let haystack = with_paths(&mut random, 8 * MIB, 4096, &paths);
    let scanner = scanner(paths);
    let whole = scanner.scan(&haystack);
    let chunked = scanner
        .scan_reader(Cursor::new(&haystack), 64 * 1024)
        .expect("reading memory");
    assert_eq!(whole, chunked);
    let mut group = criterion.benchmark_group("stream");
    group.throughput(Throughput::Bytes(haystack.len() as u64));
    group.bench_function("8MiB_chunks_64KiB", |bencher| {
        bencher.iter(|| {
            scanner
                .scan_reader(Cursor::new(black_box(&haystack)), 64 * 1024)
                .expect("reading memory")
        });
    });
    group.bench_function("8MiB_whole_buffer", |bencher| {
        bencher.iter(|| scanner.scan(black_box(&haystack)));
    });
    group.finish();
}

criterion_group!(benches, no_refs, dense_refs, many_candidates, stream);
criterion_main!(benches);
