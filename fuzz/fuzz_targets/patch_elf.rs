//! Byte 0 picks the edits, the rest is the file. Planning never panics, and every relayout it
//! produces parses again and says what was asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storepatch_elf::{ElfEdits, ElfInfo, Options, Patch, RunPathEdit, plan};

fuzz_target!(|data: &[u8]| {
    let Some((&op, file)) = data.split_first() else {
        return;
    };
    let long = vec![b'x'; 64 + usize::from(op)];
    let mut edits = ElfEdits::default();
    match op % 6 {
        0 => edits.run_path = Some(RunPathEdit::Set(b"/a".to_vec())),
        1 => edits.run_path = Some(RunPathEdit::Set(long.clone())),
        2 => edits.interpreter = Some(long.clone()),
        3 => edits.add_needed = vec![long.clone(), b"libz.so.1".to_vec()],
        4 => {
            edits.replace_needed = vec![(b"libc.so.6".to_vec(), long.clone())];
            edits.soname = Some(b"libsoname.so".to_vec());
        }
        _ => {
            edits.run_path = Some(RunPathEdit::Remove);
            edits.no_default_lib = true;
            edits.os_abi = Some(3);
        }
    }
    if let Ok(Patch::Relayout(new)) = plan(file, &edits, &Options::default()) {
        let info = ElfInfo::parse(&new).expect("a relayout parses");
        if op % 6 == 1 {
            assert_eq!(info.run_path(), Some(long.as_slice()));
        }
    }
});
