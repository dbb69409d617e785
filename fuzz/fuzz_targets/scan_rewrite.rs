//! Scanning arbitrary bytes, whole and in chunks, then scrubbing what was found.
//!
//! Checks: no panic; chunked scanning finds exactly what a whole scan finds; every hit is in
//! bounds and its hash bytes are what it claims; after writing `e`s over every live hash nothing
//! live is left and the length is unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storepatch_core::{HASH_LEN, HashPart, SCRUBBED_HASH, StoreDir, StorePath};
use storepatch_scan::{Scanner, Target};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk_byte, haystack)) = data.split_first() else {
        return;
    };
    let candidate = StorePath::new(
        HashPart::parse(b"0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1").expect("valid hash"),
        "zlib",
    );
    let scanner = Scanner::builder(StoreDir::new("/s").expect("valid store dir"))
        .candidate(candidate)
        .build();
    let whole = scanner.scan(haystack);
    let streamed = scanner
        .scan_reader(haystack, usize::from(chunk_byte) + 1)
        .expect("reading a slice cannot fail");
    assert_eq!(whole, streamed);

    let mut scrubbed = haystack.to_vec();
    for hit in &whole {
        let start = usize::try_from(hit.hash_offset).expect("offset fits");
        let hash = &haystack[start..start + HASH_LEN];
        match &hit.target {
            Target::Live(path) => {
                assert_eq!(hash, path.hash().as_bytes());
                scrubbed[start..start + HASH_LEN].copy_from_slice(&SCRUBBED_HASH);
            }
            Target::Scrubbed { .. } => assert_eq!(hash, SCRUBBED_HASH),
        }
    }
    assert_eq!(scrubbed.len(), haystack.len());
    assert!(scanner.scan(&scrubbed).iter().all(|hit| hit.live().is_none()));
});
