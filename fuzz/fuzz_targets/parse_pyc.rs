//! Reading arbitrary bytes as a `.pyc` and relocating its code objects' file names.
//!
//! Checks: no panic; whatever parses is written back byte for byte; the rewrites are sorted, in
//! bounds, do not overlap, and spliced in they give a file that parses again with the new names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use storepatch_rewrite::pyc::{Bytecode, filename_rewrites};
use storepatch_rewrite::{Relocation, Splice, splice};

fuzz_target!(|data: &[u8]| {
    let Ok(bytecode) = Bytecode::parse(data) else {
        return;
    };
    assert_eq!(bytecode.write(&BTreeMap::new()), data);
    let relocations = [Relocation {
        old: b"/".to_vec(),
        new: b"/a-longer-prefix/".to_vec(),
    }];
    let rewrites = filename_rewrites(data, &relocations).expect("it parsed before");
    let splices: Vec<Splice<'_>> = rewrites
        .iter()
        .map(|rewrite| Splice {
            offset: rewrite.offset,
            len: rewrite.len,
            bytes: &rewrite.bytes,
        })
        .collect();
    let new = splice(data, &splices).expect("rewrites are sorted and in bounds");
    let again = Bytecode::parse(&new).expect("the relocated file parses");
    assert_eq!(again.filenames().len(), bytecode.filenames().len());
});
