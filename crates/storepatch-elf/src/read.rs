//! Reading: goblin parses the file header, program headers and section headers (it bounds their
//! counts by the file size); the dynamic section, string table, symbol and version tables are
//! read here with checked arithmetic, because the loader reaches them only through `PT_DYNAMIC`
//! and files with stripped section headers must work too.
use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header;
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP, PT_LOAD, PT_NOTE};
use goblin::elf::section_header::{SHT_DYNAMIC, SHT_DYNSYM, SHT_NOTE};

use crate::error::{Error, Result};

// Dynamic tags used here (goblin has them too; local names keep the table in one place).
pub(crate) const DT_NULL: u64 = 0;
pub(crate) const DT_NEEDED: u64 = 1;
pub(crate) const DT_HASH: u64 = 4;
pub(crate) const DT_STRTAB: u64 = 5;
pub(crate) const DT_SYMTAB: u64 = 6;
pub(crate) const DT_STRSZ: u64 = 10;
pub(crate) const DT_SONAME: u64 = 14;
pub(crate) const DT_RPATH: u64 = 15;
pub(crate) const DT_RUNPATH: u64 = 29;
pub(crate) const DT_FLAGS_1: u64 = 0x6fff_fffb;
pub(crate) const DT_GNU_HASH: u64 = 0x6fff_fef5;
pub(crate) const DT_VERSYM: u64 = 0x6fff_fff0;
pub(crate) const DT_VERDEF: u64 = 0x6fff_fffc;
pub(crate) const DT_VERDEFNUM: u64 = 0x6fff_fffd;
pub(crate) const DT_VERNEED: u64 = 0x6fff_fffe;
pub(crate) const DT_VERNEEDNUM: u64 = 0x6fff_ffff;
const DT_AUXILIARY: u64 = 0x7fff_fffd;
const DT_FILTER: u64 = 0x7fff_ffff;
const DT_AUDIT: u64 = 0x6fff_fefc;
const DT_DEPAUDIT: u64 = 0x6fff_fefb;
pub(crate) const DF_1_NODEFLIB: u64 = 0x800;
pub(crate) const DF_1_PIE: u64 = 0x0800_0000;

/// Dynamic tags whose value is an offset into the dynamic string table.
pub(crate) fn is_string_tag(tag: u64) -> bool {
    matches!(
        tag,
        DT_NEEDED
            | DT_SONAME
            | DT_RPATH
            | DT_RUNPATH
            | DT_AUXILIARY
            | DT_FILTER
            | DT_AUDIT
            | DT_DEPAUDIT
    )
}

/// Guards loops over linked lists read from the file.
const MAX_CHAIN: usize = 1 << 16;

/// Endian- and class-aware access to raw bytes; every read is bounds-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Codec {
    pub(crate) is64: bool,
    pub(crate) little: bool,
}

impl Codec {
    pub(crate) fn word_size(self) -> u64 {
        if self.is64 { 8 } else { 4 }
    }

    pub(crate) fn dyn_size(self) -> u64 {
        2 * self.word_size()
    }

    pub(crate) fn phdr_size(self) -> u64 {
        if self.is64 { 56 } else { 32 }
    }

    fn take<const N: usize>(bytes: &[u8], offset: u64) -> Option<[u8; N]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(N)?;
        bytes.get(start..end)?.try_into().ok()
    }

    pub(crate) fn u16(self, bytes: &[u8], offset: u64) -> Option<u16> {
        let raw = Self::take::<2>(bytes, offset)?;
        Some(if self.little {
            u16::from_le_bytes(raw)
        } else {
            u16::from_be_bytes(raw)
        })
    }

    pub(crate) fn u32(self, bytes: &[u8], offset: u64) -> Option<u32> {
        let raw = Self::take::<4>(bytes, offset)?;
        Some(if self.little {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        })
    }

    pub(crate) fn u64(self, bytes: &[u8], offset: u64) -> Option<u64> {
        let raw = Self::take::<8>(bytes, offset)?;
        Some(if self.little {
            u64::from_le_bytes(raw)
        } else {
            u64::from_be_bytes(raw)
        })
    }

    /// A class-sized word (`Elf32_Addr`/`Elf64_Addr` and friends).
    pub(crate) fn word(self, bytes: &[u8], offset: u64) -> Option<u64> {
        if self.is64 {
            self.u64(bytes, offset)
        } else {
            self.u32(bytes, offset).map(u64::from)
        }
    }

    pub(crate) fn encode_u16(self, value: u16) -> Vec<u8> {
        if self.little {
            value.to_le_bytes().to_vec()
        } else {
            value.to_be_bytes().to_vec()
        }
    }

    pub(crate) fn encode_u32(self, value: u32) -> Vec<u8> {
        if self.little {
            value.to_le_bytes().to_vec()
        } else {
            value.to_be_bytes().to_vec()
        }
    }

    pub(crate) fn encode_word(self, value: u64) -> Vec<u8> {
        match (self.is64, self.little) {
            (true, true) => value.to_le_bytes().to_vec(),
            (true, false) => value.to_be_bytes().to_vec(),
            (false, true) => (value as u32).to_le_bytes().to_vec(),
            (false, false) => (value as u32).to_be_bytes().to_vec(),
        }
    }
}

/// One program header, as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) p_type: u32,
    pub(crate) flags: u32,
    pub(crate) offset: u64,
    pub(crate) vaddr: u64,
    pub(crate) paddr: u64,
    pub(crate) filesz: u64,
    pub(crate) memsz: u64,
    pub(crate) align: u64,
}

/// One section header, as numbers; `index` is its position in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) index: usize,
    pub(crate) name: Vec<u8>,
    pub(crate) sh_type: u32,
    pub(crate) flags: u64,
    pub(crate) addr: u64,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) entsize: u64,
}

/// One dynamic entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DynEntry {
    pub(crate) tag: u64,
    pub(crate) value: u64,
}

/// The dynamic section as the loader sees it.
#[derive(Debug, Clone)]
pub(crate) struct Dynamic {
    /// File offset of the first entry.
    pub(crate) offset: u64,
    /// Entries before the first `DT_NULL`.
    pub(crate) entries: Vec<DynEntry>,
    /// How many entries fit in the segment (including all terminators).
    pub(crate) capacity: u64,
}

/// Where [`Parsed::read_dynamic`] finds the dynamic entries, and how to name it in an error.
struct DynamicLocation {
    offset: u64,
    size: u64,
    outside: &'static str,
    misaligned: &'static str,
}

/// The dynamic string table: where it is and its bytes.
#[derive(Debug, Clone)]
pub(crate) struct StringTable {
    pub(crate) offset: u64,
    pub(crate) bytes: Vec<u8>,
}

impl StringTable {
    /// The NUL-terminated string at `index`, without the NUL.
    pub(crate) fn get(&self, index: u64) -> Option<&[u8]> {
        let start = usize::try_from(index).ok()?;
        let rest = self.bytes.get(start..)?;
        let end = rest.iter().position(|&byte| byte == 0)?;
        rest.get(..end)
    }
}

/// Everything the editor needs, read once.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub(crate) codec: Codec,
    pub(crate) e_type: u16,
    pub(crate) machine: u16,
    pub(crate) os_abi: u8,
    pub(crate) phoff: u64,
    pub(crate) shoff: u64,
    pub(crate) segments: Vec<Segment>,
    pub(crate) sections: Vec<Section>,
    pub(crate) interp: Option<(usize, Vec<u8>)>,
    pub(crate) dynamic: Option<Dynamic>,
    pub(crate) dynstr: Option<StringTable>,
    /// Offsets into `.dynstr` used by symbols and version records (not by `.dynamic`, not
    /// `vn_file`, which is in `verneed_files`), when they
    /// could all be found; `None` when some might be missing, which forbids in-place reuse.
    pub(crate) other_string_refs: Option<Vec<u64>>,
    /// `(file offset of .gnu.version_r vn_file field, string offset)` pairs.
    pub(crate) verneed_files: Vec<(u64, u64)>,
    /// File offset and entry count of the dynamic symbol table and `.gnu.version`.
    pub(crate) dynsym: Option<(u64, u64)>,
    pub(crate) versym: Option<u64>,
    pub(crate) dlopen: Vec<Vec<u8>>,
    pub(crate) dlopen_groups: Vec<Vec<Vec<u8>>>,
}

fn usize_of(value: u64, what: &'static str) -> Result<usize> {
    usize::try_from(value).map_err(|_| Error::malformed(what, value))
}

impl Parsed {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self> {
        if !bytes.starts_with(b"\x7fELF") {
            return Err(Error::NotElf {
                reason: "missing ELF magic",
            });
        }
        if bytes.len() < 16 {
            return Err(Error::NotElf {
                reason: "truncated ELF",
            });
        }
        // The identification bytes first, so that the message names the one that is wrong.
        if !matches!(
            bytes[header::EI_CLASS],
            header::ELFCLASS32 | header::ELFCLASS64
        ) {
            return Err(Error::NotElf {
                reason: "unknown ELF class (EI_CLASS)",
            });
        }
        if !matches!(
            bytes[header::EI_DATA],
            header::ELFDATA2LSB | header::ELFDATA2MSB
        ) {
            return Err(Error::NotElf {
                reason: "unknown ELF data encoding (EI_DATA)",
            });
        }
        if bytes[header::EI_VERSION] != header::EV_CURRENT {
            return Err(Error::NotElf {
                reason: "unsupported ELF version (EI_VERSION)",
            });
        }
        let ehdr = goblin::elf::Elf::parse_header(bytes).map_err(|_| Error::NotElf {
            reason: "truncated or invalid ELF header",
        })?;
        let container = ehdr.container().map_err(|_| Error::NotElf {
            reason: "unknown ELF class",
        })?;
        let endian = ehdr.endianness().map_err(|_| Error::NotElf {
            reason: "unknown ELF data encoding",
        })?;
        let codec = Codec {
            is64: container == Container::Big,
            little: endian == Endian::Little,
        };
        let ctx = Ctx::new(container, endian);
        let phentsize = u64::from(ehdr.e_phentsize);
        if ehdr.e_phnum > 0 && phentsize != codec.phdr_size() {
            let at = if codec.is64 { 0x36 } else { 0x2a };
            return Err(Error::malformed(
                "program header entry size (e_phentsize)",
                at,
            ));
        }
        let phoff = ehdr.e_phoff;
        let program_headers = goblin::elf::ProgramHeader::parse(
            bytes,
            usize_of(phoff, "program header table")?,
            usize::from(ehdr.e_phnum),
            ctx,
        )
        .map_err(|_| Error::malformed("program header table", phoff))?;
        let segments: Vec<Segment> = program_headers
            .iter()
            .map(|phdr| Segment {
                p_type: phdr.p_type,
                flags: phdr.p_flags,
                offset: phdr.p_offset,
                vaddr: phdr.p_vaddr,
                paddr: phdr.p_paddr,
                filesz: phdr.p_filesz,
                memsz: phdr.p_memsz,
                align: phdr.p_align,
            })
            .collect();
        check_segments(bytes, &segments, phoff, codec)?;
        let sections = read_sections(bytes, &ehdr, ctx)?;

        let mut parsed = Self {
            codec,
            e_type: ehdr.e_type,
            machine: ehdr.e_machine,
            os_abi: ehdr.e_ident[header::EI_OSABI],
            phoff,
            shoff: ehdr.e_shoff,
            segments,
            sections,
            interp: None,
            dynamic: None,
            dynstr: None,
            other_string_refs: Some(Vec::new()),
            verneed_files: Vec::new(),
            dynsym: None,
            versym: None,
            dlopen: Vec::new(),
            dlopen_groups: Vec::new(),
        };
        parsed.read_interp(bytes)?;
        parsed.read_dynamic(bytes)?;
        parsed.read_symbols_and_versions(bytes)?;
        parsed.read_dlopen_notes(bytes);
        Ok(parsed)
    }

    /// Maps a virtual address to a file offset through the `PT_LOAD` segments.
    pub(crate) fn offset_of(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .filter(|segment| segment.p_type == PT_LOAD)
            .find(|segment| vaddr >= segment.vaddr && vaddr - segment.vaddr < segment.filesz)
            .and_then(|segment| (vaddr - segment.vaddr).checked_add(segment.offset))
    }

    fn read_interp(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(segment) = self.segments.iter().find(|s| s.p_type == PT_INTERP) else {
            return Ok(());
        };
        let range = file_range(bytes, segment.offset, segment.filesz)
            .ok_or_else(|| Error::malformed("PT_INTERP", segment.offset))?;
        let raw = &bytes[range];
        let end = raw.iter().position(|&byte| byte == 0).unwrap_or(raw.len());
        self.interp = Some((raw.len(), raw[..end].to_vec()));
        Ok(())
    }

    /// Where the dynamic section is: `PT_DYNAMIC`, which the loader uses; without one, the
    /// `SHT_DYNAMIC` section header, which is all patchelf ever reads (a `.dynamic` of type
    /// `SHT_NOBITS`, as in a separate debug file, is no dynamic section).
    fn dynamic_location(&self) -> Option<DynamicLocation> {
        if let Some(segment) = self.segments.iter().find(|s| s.p_type == PT_DYNAMIC) {
            return Some(DynamicLocation {
                offset: segment.offset,
                size: segment.filesz,
                outside: "dynamic section (PT_DYNAMIC) outside the file",
                misaligned: "dynamic section (PT_DYNAMIC) offset misaligned",
            });
        }
        let section = self.dynamic_section()?;
        Some(DynamicLocation {
            offset: section.offset,
            size: section.size,
            outside: "dynamic section (.dynamic section header, no PT_DYNAMIC) outside the file",
            misaligned: "dynamic section (.dynamic section header, no PT_DYNAMIC) offset misaligned",
        })
    }

    fn read_dynamic(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(location) = self.dynamic_location() else {
            return Ok(());
        };
        let codec = self.codec;
        let range = file_range(bytes, location.offset, location.size)
            .ok_or_else(|| Error::malformed(location.outside, location.offset))?;
        if location.offset % codec.word_size() != 0 {
            return Err(Error::malformed(location.misaligned, location.offset));
        }
        let capacity = (range.len() as u64) / codec.dyn_size();
        let mut entries = Vec::new();
        for index in 0..capacity {
            let at = location.offset + index * codec.dyn_size();
            let tag = codec
                .word(bytes, at)
                .ok_or_else(|| Error::malformed("dynamic entry", at))?;
            let value = codec
                .word(bytes, at + codec.word_size())
                .ok_or_else(|| Error::malformed("dynamic entry", at))?;
            if tag == DT_NULL {
                break;
            }
            entries.push(DynEntry { tag, value });
        }
        let dynamic = Dynamic {
            offset: location.offset,
            entries,
            capacity,
        };
        let strtab = dynamic
            .entries
            .iter()
            .find(|e| e.tag == DT_STRTAB)
            .map(|e| e.value);
        let strsz = dynamic
            .entries
            .iter()
            .find(|e| e.tag == DT_STRSZ)
            .map(|e| e.value);
        if let (Some(strtab), Some(strsz)) = (strtab, strsz) {
            let offset = self
                .offset_of(strtab)
                .ok_or_else(|| Error::malformed("DT_STRTAB address", strtab))?;
            let range = file_range(bytes, offset, strsz)
                .ok_or_else(|| Error::malformed("dynamic string table", offset))?;
            if bytes[range.clone()].last() != Some(&0) {
                return Err(Error::malformed(
                    "dynamic string table (.dynstr) not NUL-terminated",
                    offset,
                ));
            }
            self.dynstr = Some(StringTable {
                offset,
                bytes: bytes[range].to_vec(),
            });
        } else if dynamic.entries.iter().any(|e| is_string_tag(e.tag)) {
            return Err(Error::malformed(
                "dynamic section without DT_STRTAB/DT_STRSZ",
                location.offset,
            ));
        }
        if let Some(table) = &self.dynstr {
            for entry in dynamic.entries.iter().filter(|e| is_string_tag(e.tag)) {
                if table.get(entry.value).is_none() {
                    return Err(Error::malformed("dynamic string offset", entry.value));
                }
            }
        }
        self.dynamic = Some(dynamic);
        Ok(())
    }

    pub(crate) fn dyn_value(&self, tag: u64) -> Option<u64> {
        self.dynamic
            .as_ref()?
            .entries
            .iter()
            .find(|entry| entry.tag == tag)
            .map(|entry| entry.value)
    }

    /// Finds `.dynsym`, `.gnu.version`, `.gnu.version_r` and `.gnu.version_d` through the dynamic
    /// section and records every string offset they use.
    fn read_symbols_and_versions(&mut self, bytes: &[u8]) -> Result<()> {
        if self.dynamic.is_none() || self.dynstr.is_none() {
            return Ok(());
        }
        let codec = self.codec;
        let mut refs = Vec::new();
        let mut complete = true;
        // Symbols.
        if let Some(symtab) = self.dyn_value(DT_SYMTAB) {
            let count = self.dynsym_count(bytes);
            match (self.offset_of(symtab), count) {
                (Some(offset), Some(count)) => {
                    let entry_size = if codec.is64 { 24 } else { 16 };
                    let fits = count
                        .checked_mul(entry_size)
                        .and_then(|size| file_range(bytes, offset, size))
                        .is_some();
                    if fits {
                        for index in 0..count {
                            if let Some(name) = codec.u32(bytes, offset + index * entry_size) {
                                refs.push(u64::from(name));
                            }
                        }
                        self.dynsym = Some((offset, count));
                    } else {
                        complete = false;
                    }
                }
                _ => complete = false,
            }
        }
        if let Some(versym) = self.dyn_value(DT_VERSYM) {
            self.versym = self.offset_of(versym);
        }
        // Version needs: Elf_Verneed is 16 bytes, Elf_Vernaux 16 bytes, in both classes. The
        // loader follows them (and patchelf's `--replace-needed` rewrites them), so a chain that
        // leaves the file or names a string outside `.dynstr` is an error, not a partial read.
        if let (Some(address), Some(count)) =
            (self.dyn_value(DT_VERNEED), self.dyn_value(DT_VERNEEDNUM))
        {
            let strings = self
                .dynstr
                .as_ref()
                .map_or(0, |table| table.bytes.len() as u64);
            let mut at = self
                .offset_of(address)
                .ok_or_else(|| Error::malformed("DT_VERNEED address", address))?;
            for _ in 0..count.min(MAX_CHAIN as u64) {
                let (Some(cnt), Some(file), Some(aux), Some(next)) = (
                    codec.u16(bytes, at + 2),
                    codec.u32(bytes, at + 4),
                    codec.u32(bytes, at + 8),
                    codec.u32(bytes, at + 12),
                ) else {
                    return Err(Error::malformed(
                        "version need entry (vn_next) outside the file",
                        at,
                    ));
                };
                if u64::from(file) >= strings {
                    return Err(Error::malformed(
                        "version need file name (vn_file) outside .dynstr",
                        at + 4,
                    ));
                }
                self.verneed_files.push((at + 4, u64::from(file)));
                let mut aux_at = at + u64::from(aux);
                for _ in 0..cnt {
                    let (Some(name), Some(aux_next)) =
                        (codec.u32(bytes, aux_at + 8), codec.u32(bytes, aux_at + 12))
                    else {
                        return Err(Error::malformed(
                            "version need auxiliary entry (vn_aux/vna_next) outside the file",
                            aux_at,
                        ));
                    };
                    if u64::from(name) >= strings {
                        return Err(Error::malformed(
                            "version need auxiliary name (vna_name) outside .dynstr",
                            aux_at + 8,
                        ));
                    }
                    refs.push(u64::from(name));
                    if aux_next == 0 {
                        break;
                    }
                    aux_at += u64::from(aux_next);
                }
                if next == 0 {
                    break;
                }
                at += u64::from(next);
            }
        }
        // Version definitions: Elf_Verdef is 20 bytes, Elf_Verdaux 8 bytes.
        if let (Some(address), Some(count)) =
            (self.dyn_value(DT_VERDEF), self.dyn_value(DT_VERDEFNUM))
        {
            match self.offset_of(address) {
                Some(mut at) => {
                    for _ in 0..count.min(MAX_CHAIN as u64) {
                        let (Some(cnt), Some(aux), Some(next)) = (
                            codec.u16(bytes, at + 6),
                            codec.u32(bytes, at + 12),
                            codec.u32(bytes, at + 16),
                        ) else {
                            complete = false;
                            break;
                        };
                        let mut aux_at = at + u64::from(aux);
                        for _ in 0..cnt {
                            let (Some(name), Some(aux_next)) =
                                (codec.u32(bytes, aux_at), codec.u32(bytes, aux_at + 4))
                            else {
                                complete = false;
                                break;
                            };
                            refs.push(u64::from(name));
                            if aux_next == 0 {
                                break;
                            }
                            aux_at += u64::from(aux_next);
                        }
                        if next == 0 {
                            break;
                        }
                        at += u64::from(next);
                    }
                }
                None => complete = false,
            }
        }
        self.other_string_refs = complete.then_some(refs);
        Ok(())
    }

    /// Number of dynamic symbols: from the section header, else `DT_HASH`, else `DT_GNU_HASH`.
    fn dynsym_count(&self, bytes: &[u8]) -> Option<u64> {
        let codec = self.codec;
        if let Some(section) = self.sections.iter().find(|s| s.sh_type == SHT_DYNSYM) {
            let entry_size = if codec.is64 { 24 } else { 16 };
            return Some(section.size / entry_size);
        }
        if let Some(hash) = self.dyn_value(DT_HASH) {
            let offset = self.offset_of(hash)?;
            return codec.u32(bytes, offset + 4).map(u64::from);
        }
        let gnu = self.offset_of(self.dyn_value(DT_GNU_HASH)?)?;
        let nbuckets = u64::from(codec.u32(bytes, gnu)?);
        let symoffset = u64::from(codec.u32(bytes, gnu + 4)?);
        let bloom_size = u64::from(codec.u32(bytes, gnu + 8)?);
        let buckets = gnu
            .checked_add(16)?
            .checked_add(bloom_size.checked_mul(codec.word_size())?)?;
        if nbuckets > MAX_CHAIN as u64 * 16 {
            return None;
        }
        let mut last = 0;
        for index in 0..nbuckets {
            last = last.max(u64::from(codec.u32(bytes, buckets + index * 4)?));
        }
        if last < symoffset {
            return Some(symoffset);
        }
        let chains = buckets.checked_add(nbuckets * 4)?;
        let mut index = last;
        loop {
            let value = codec.u32(
                bytes,
                chains.checked_add((index - symoffset).checked_mul(4)?)?,
            )?;
            if value & 1 == 1 {
                return Some(index + 1);
            }
            index += 1;
            if index - last > 1 << 24 {
                return None;
            }
        }
    }

    /// Collects sonames from systemd-style `.note.dlopen` notes (owner `FDO`, type `0x407c0c0a`,
    /// descriptor a JSON array of objects with a `soname` array).
    fn read_dlopen_notes(&mut self, bytes: &[u8]) {
        let mut ranges: Vec<(u64, u64, u64)> = self
            .segments
            .iter()
            .filter(|s| s.p_type == PT_NOTE)
            .map(|s| (s.offset, s.filesz, s.align))
            .collect();
        ranges.extend(
            self.sections
                .iter()
                .filter(|s| s.sh_type == SHT_NOTE || s.name == b".note.dlopen")
                .map(|s| (s.offset, s.size, 4)),
        );
        ranges.sort_unstable();
        ranges.dedup_by_key(|range| (range.0, range.1));
        let mut sonames = Vec::new();
        let mut groups: Vec<Vec<Vec<u8>>> = Vec::new();
        for (offset, size, align) in ranges {
            let Some(range) = file_range(bytes, offset, size) else {
                continue;
            };
            for desc in notes(&bytes[range], self.codec, align, b"FDO", 0x407c_0c0a) {
                for group in crate::dlopen::groups(desc) {
                    for soname in &group {
                        if !sonames.contains(soname) {
                            sonames.push(soname.clone());
                        }
                    }
                    if !groups.contains(&group) {
                        groups.push(group);
                    }
                }
            }
        }
        self.dlopen = sonames;
        self.dlopen_groups = groups;
    }

    /// Finds the section header that describes the loader's view of a structure.
    pub(crate) fn section_at(&self, offset: u64, sh_type: Option<u32>) -> Option<&Section> {
        self.sections.iter().find(|section| {
            section.offset == offset
                && section.size > 0
                && sh_type.is_none_or(|wanted| section.sh_type == wanted)
        })
    }

    /// The `SHT_DYNAMIC` section header (never a `SHT_NOBITS` `.dynamic`).
    pub(crate) fn dynamic_section(&self) -> Option<&Section> {
        self.sections.iter().find(|s| s.sh_type == SHT_DYNAMIC)
    }
}

/// Something damaged in a file that can still be edited, which patchelf warns about (on
/// stderr) when it rewrites the file's headers, that is, on every edit that relayouts the file.
///
/// The relayout here never renumbers sections, so these symbols keep pointing where they did;
/// the warnings say the file was broken before it was edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Warning {
    /// Symbols in `.symtab` or `.dynsym` have a section index (`st_shndx`) beyond the section
    /// header table.
    SymbolInMissingSection {
        /// The section index the symbols name.
        section: u16,
    },
    /// Symbols in `.symtab` or `.dynsym` are defined in a section whose name is empty.
    SymbolInUnnamedSection {
        /// The section index the symbols name.
        section: u16,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // patchelf's wording, so that scripts matching its output keep working.
        match self {
            Self::SymbolInMissingSection { section } => write!(
                formatter,
                "entry {section} in symbol table refers to a non-existent section"
            ),
            Self::SymbolInUnnamedSection { section } => write!(
                formatter,
                "symbol table entry refers to an unnamed section (index {section})"
            ),
        }
    }
}

/// The [`Warning`]s patchelf would print when it rewrites this file, each once, in order; a file
/// that does not parse has none (its error is reported instead).
pub fn relayout_warnings(bytes: &[u8]) -> Vec<Warning> {
    const SHT_SYMTAB: u32 = 2;
    const SHN_LORESERVE: u16 = 0xff00;
    let Ok(parsed) = Parsed::parse(bytes) else {
        return Vec::new();
    };
    let codec = parsed.codec;
    // `Elf64_Sym` puts `st_shndx` after `st_name`, `st_info` and `st_other`; `Elf32_Sym` after
    // `st_value` and `st_size` too.
    let (entry_size, shndx_at): (u64, u64) = if codec.is64 { (24, 6) } else { (16, 14) };
    let mut warnings = std::collections::BTreeSet::new();
    for table in parsed
        .sections
        .iter()
        .skip(1)
        .filter(|s| s.sh_type == SHT_SYMTAB || s.sh_type == SHT_DYNSYM)
    {
        let Some(range) = file_range(bytes, table.offset, table.size) else {
            continue;
        };
        let count = (range.len() as u64) / entry_size;
        for index in 0..count {
            let Some(section) = codec.u16(bytes, table.offset + index * entry_size + shndx_at)
            else {
                break;
            };
            if section == 0 || section >= SHN_LORESERVE {
                continue;
            }
            match parsed.sections.get(usize::from(section)) {
                None => warnings.insert(Warning::SymbolInMissingSection { section }),
                Some(target) if target.name.is_empty() => {
                    warnings.insert(Warning::SymbolInUnnamedSection { section })
                }
                Some(_) => false,
            };
        }
    }
    warnings.into_iter().collect()
}

/// Iterates the descriptors of notes with the given owner and type.
fn notes<'a>(
    data: &'a [u8],
    codec: Codec,
    align: u64,
    owner: &'a [u8],
    note_type: u32,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let align = if align == 8 { 8 } else { 4 };
    let mut at: u64 = 0;
    std::iter::from_fn(move || {
        loop {
            let namesz = u64::from(codec.u32(data, at)?);
            let descsz = u64::from(codec.u32(data, at + 4)?);
            let kind = codec.u32(data, at + 8)?;
            let name_at = at + 12;
            let desc_at = name_at.checked_add(namesz.checked_next_multiple_of(align)?)?;
            let next = desc_at.checked_add(descsz.checked_next_multiple_of(align)?)?;
            let name =
                data.get(usize::try_from(name_at).ok()?..usize::try_from(name_at + namesz).ok()?)?;
            let desc =
                data.get(usize::try_from(desc_at).ok()?..usize::try_from(desc_at + descsz).ok()?)?;
            at = next;
            let name = name.strip_suffix(b"\0").unwrap_or(name);
            if kind == note_type && name == owner {
                return Some(desc);
            }
        }
    })
}

/// `offset..offset+size` as a `usize` range if it lies inside `bytes`.
pub(crate) fn file_range(bytes: &[u8], offset: u64, size: u64) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    (end <= bytes.len()).then_some(start..end)
}

/// Program headers whose file contents lie beyond the end of the file are rejected.
fn check_segments(bytes: &[u8], segments: &[Segment], phoff: u64, codec: Codec) -> Result<()> {
    for (index, segment) in segments.iter().enumerate() {
        if segment.p_type == 0 || segment.filesz == 0 {
            continue;
        }
        if file_range(bytes, segment.offset, segment.filesz).is_none() {
            let at = phoff.saturating_add(index as u64 * codec.phdr_size());
            let what = match segment.p_type {
                PT_LOAD => {
                    "program header PT_LOAD (p_offset + p_filesz beyond the end of the file)"
                }
                PT_DYNAMIC => {
                    "program header PT_DYNAMIC (p_offset + p_filesz beyond the end of the file)"
                }
                PT_INTERP => {
                    "program header PT_INTERP (p_offset + p_filesz beyond the end of the file)"
                }
                PT_NOTE => {
                    "program header PT_NOTE (p_offset + p_filesz beyond the end of the file)"
                }
                _ => "program header (p_offset + p_filesz beyond the end of the file)",
            };
            return Err(Error::malformed(what, at));
        }
    }
    Ok(())
}

/// Reads the section headers; a file without them (`e_shnum` 0) has none. A table that is
/// present must be well-formed: the entry size, the name table index, the name table itself
/// and every name offset are checked.
///
/// With 0xff00 sections or more, the ELF header cannot hold the count: `e_shnum` is 0 and the
/// first section header's `sh_size` holds it, and `e_shstrndx` is `SHN_XINDEX` with the index in
/// its `sh_link` (extended section numbering, as the ELF specification defines it).
fn read_sections(bytes: &[u8], ehdr: &goblin::elf::Header, ctx: Ctx) -> Result<Vec<Section>> {
    const SHN_XINDEX: u16 = 0xffff;
    if ehdr.e_shoff == 0 {
        return Ok(Vec::new());
    }
    let is64 = ctx.container == Container::Big;
    let (expected, shentsize_at, shstrndx_at) = if is64 {
        (64, 0x3a, 0x3e)
    } else {
        (40, 0x2e, 0x32)
    };
    let shoff = ehdr.e_shoff;
    let first = || -> Result<goblin::elf::SectionHeader> {
        if ehdr.e_shentsize != expected {
            return Err(Error::malformed(
                "section header entry size (e_shentsize)",
                shentsize_at,
            ));
        }
        if file_range(bytes, shoff, u64::from(expected)).is_none() {
            return Err(Error::malformed(
                "section header table outside the file",
                shoff,
            ));
        }
        goblin::elf::SectionHeader::parse(bytes, usize_of(shoff, "section header table")?, 1, ctx)
            .ok()
            .and_then(|mut headers| headers.pop())
            .ok_or_else(|| Error::malformed("section header table", shoff))
    };
    let count = if ehdr.e_shnum == 0 {
        // No section headers, unless a readable first header gives the count: tools that strip
        // the section headers leave the other fields as they may.
        match first() {
            Ok(header) if header.sh_size != 0 => header.sh_size,
            _ => return Ok(Vec::new()),
        }
    } else {
        u64::from(ehdr.e_shnum)
    };
    if ehdr.e_shentsize != expected {
        return Err(Error::malformed(
            "section header entry size (e_shentsize)",
            shentsize_at,
        ));
    }
    let table_size = count.saturating_mul(u64::from(expected));
    if file_range(bytes, shoff, table_size).is_none() {
        return Err(Error::malformed(
            "section header table outside the file",
            shoff,
        ));
    }
    let headers = goblin::elf::SectionHeader::parse(
        bytes,
        usize_of(shoff, "section header table")?,
        usize_of(count, "section header count")?,
        ctx,
    )
    .map_err(|_| Error::malformed("section header table", shoff))?;
    let strndx = if ehdr.e_shstrndx == SHN_XINDEX {
        usize::try_from(first()?.sh_link).unwrap_or(usize::MAX)
    } else {
        usize::from(ehdr.e_shstrndx)
    };
    let Some(strtab) = headers.get(strndx).filter(|_| strndx != 0) else {
        return Err(Error::malformed(
            "section name string table index (e_shstrndx) out of range",
            shstrndx_at,
        ));
    };
    let names = file_range(bytes, strtab.sh_offset, strtab.sh_size)
        .map(|range| &bytes[range])
        .ok_or_else(|| {
            Error::malformed(
                "section name string table outside the file",
                strtab.sh_offset,
            )
        })?;
    if names.last() != Some(&0) {
        return Err(Error::malformed(
            "section name string table (.shstrtab) empty or not NUL-terminated",
            strtab.sh_offset,
        ));
    }
    let mut sections = Vec::with_capacity(headers.len());
    for (index, header) in headers.iter().enumerate() {
        let Some(rest) = names.get(header.sh_name..).filter(|rest| !rest.is_empty()) else {
            return Err(Error::malformed(
                "section name (sh_name) outside the section name string table",
                shoff + index as u64 * u64::from(expected),
            ));
        };
        let name = rest
            .split(|&byte| byte == 0)
            .next()
            .unwrap_or_default()
            .to_vec();
        sections.push(Section {
            index,
            name,
            sh_type: header.sh_type,
            flags: header.sh_flags,
            addr: header.sh_addr,
            offset: header.sh_offset,
            size: header.sh_size,
            entsize: header.sh_entsize,
        });
    }
    Ok(sections)
}

#[cfg(test)]
#[path = "read_corruption_tests.rs"]
mod corruption_tests;
