//! Any bytes: parsing returns an error or an `ElfInfo`, never panics or allocates wildly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = storepatch_elf::ElfInfo::parse(data);
});
