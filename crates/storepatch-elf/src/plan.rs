//! Planning: turns the parsed file plus an [`ElfEdits`] into the bytes to write.
//!
//! All edits are applied to a model of the dynamic section first; only then is the layout decided,
//! once: strings are reused in place where that is provably safe, otherwise appended to a copy of
//! `.dynstr` that moves (with a grown `.dynamic`, a longer interpreter and, if needed, the program
//! header table) into one new `PT_LOAD` at the end of the file.
use std::ops::Range;
use std::path::Path;

use goblin::elf::dynamic::DT_DEBUG;
use goblin::elf::program_header::{
    PF_R, PF_W, PF_X, PT_DYNAMIC, PT_GNU_STACK, PT_INTERP, PT_LOAD, PT_NOTE, PT_NULL, PT_PHDR,
};
use goblin::elf::section_header::{SHT_NOBITS, SHT_STRTAB};

use crate::error::{Error, Result};
use crate::read::{
    Codec, DF_1_NODEFLIB, DF_1_PIE, DT_FLAGS_1, DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME,
    DT_STRSZ, DT_STRTAB, DynEntry, Parsed, Segment, file_range, is_string_tag,
};
use crate::{ElfEdits, ElfInfo, Options, RunPathEdit};

/// One contiguous write into the original file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// File offset of the first byte.
    pub offset: u64,
    /// The bytes to write there.
    pub bytes: Vec<u8>,
}

impl Write {
    /// Copies the part of this write that falls inside `window`, which holds the file's bytes
    /// from offset `start` on; returns how many bytes that was.
    pub(crate) fn apply_within(&self, window: &mut [u8], start: u64) -> usize {
        let window_end = start.saturating_add(window.len() as u64);
        let end = self.offset.saturating_add(self.bytes.len() as u64);
        let (low, high) = (self.offset.max(start), end.min(window_end));
        if low >= high {
            return 0;
        }
        // Both ranges are within slices that are already in memory, so they fit in usize.
        let to_usize = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        let into = to_usize(low - start)..to_usize(high - start);
        let from = to_usize(low - self.offset)..to_usize(high - self.offset);
        window[into].copy_from_slice(&self.bytes[from]);
        to_usize(high - low)
    }
}

/// What applying a set of edits to a file takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patch {
    /// The file already says what the edits ask for.
    Unchanged,
    /// Overwrite these byte ranges; the file keeps its size and layout.
    InPlace(Vec<Write>),
    /// The file must be rewritten with these complete new contents.
    Relayout(Vec<u8>),
}

/// A dynamic entry during planning.
#[derive(Debug, Clone)]
enum Value {
    Number(u64),
    Text {
        bytes: Vec<u8>,
        /// String-table offset of the original string, if the entry comes from the file.
        origin: Option<u64>,
        changed: bool,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    tag: u64,
    value: Value,
    /// Index of the original entry this one came from.
    original: Option<usize>,
}

impl Entry {
    fn text(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Text { bytes, .. } => Some(bytes),
            Value::Number(_) => None,
        }
    }

    fn set_text(&mut self, new: &[u8]) {
        if let Value::Text { bytes, changed, .. } = &mut self.value
            && bytes.as_slice() != new
        {
            *bytes = new.to_vec();
            *changed = true;
        }
    }

    fn new_text(tag: u64, bytes: &[u8]) -> Self {
        Self {
            tag,
            value: Value::Text {
                bytes: bytes.to_vec(),
                origin: None,
                changed: true,
            },
            original: None,
        }
    }
}

/// Default page size of the machine's ABI: the largest page size its kernels may use.
pub(crate) fn abi_page_size(machine: u16) -> u64 {
    use goblin::elf::header::{EM_AARCH64, EM_MIPS, EM_PPC, EM_PPC64, EM_SPARCV9};
    const EM_LOONGARCH: u16 = 258;
    match machine {
        EM_AARCH64 | EM_PPC64 | EM_PPC | EM_MIPS | EM_LOONGARCH => 0x10000,
        EM_SPARCV9 => 0x2000,
        _ => 0x1000,
    }
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    value.checked_next_multiple_of(align)
}

/// Whether `edits` give the file a non-empty run path.
fn sets_run_path(edits: &ElfEdits) -> bool {
    matches!(&edits.run_path, Some(RunPathEdit::Set(value)) if !value.is_empty())
        || edits.add_run_path.iter().any(|entry| !entry.is_empty())
}

/// Appends writes for the bytes of `new` at `offset` that differ from `original`.
fn push_diff(writes: &mut Vec<Write>, original: &[u8], offset: u64, new: &[u8]) {
    let mut run: Option<(u64, Vec<u8>)> = None;
    for (index, &byte) in new.iter().enumerate() {
        let at = offset + index as u64;
        let old = usize::try_from(at)
            .ok()
            .and_then(|at| original.get(at))
            .copied();
        if old == Some(byte) {
            if let Some((start, bytes)) = run.take() {
                writes.push(Write {
                    offset: start,
                    bytes,
                });
            }
        } else {
            match &mut run {
                Some((_, bytes)) => bytes.push(byte),
                None => run = Some((at, vec![byte])),
            }
        }
    }
    if let Some((start, bytes)) = run {
        writes.push(Write {
            offset: start,
            bytes,
        });
    }
}

/// The file bytes `offset..offset + size` (clamped, never wrapping).
fn extent(offset: u64, size: u64) -> Range<u64> {
    offset..offset.saturating_add(size)
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

struct Planner<'a> {
    bytes: &'a [u8],
    parsed: Parsed,
    codec: Codec,
    writes: Vec<Write>,
    /// `vn_file` fields to rewrite: (field offset, final string offset).
    verneed_targets: Vec<(u64, u64)>,
    /// Final `.dynstr` offsets of the new names of renamed dynamic symbols, in order.
    symbol_name_targets: Vec<u64>,
    /// A `PT_GNU_STACK` to add to a file that has none and no `PT_NULL` slot to reuse: the
    /// program header table grows (and moves) in the relayout.
    new_stack: Option<Segment>,
    /// A resolution cache note to add, encoded: it goes into the new segment, with a `PT_NOTE`
    /// and a section header of its own.
    new_note: Option<Vec<u8>>,
    /// `e_shnum` after the last section header (a stale resolution cache note) was dropped.
    section_count: Option<u64>,
}

/// Computes what applying `edits` to the ELF file `bytes` takes.
pub fn plan(bytes: &[u8], edits: &ElfEdits, options: &Options) -> Result<Patch> {
    Ok(match plan_layout(bytes, edits, options)? {
        Planned::Unchanged => Patch::Unchanged,
        Planned::InPlace(writes) => Patch::InPlace(writes),
        Planned::Relayout(layout) => {
            let new_bytes = layout.build(bytes)?;
            layout.verify(&new_bytes)?;
            Patch::Relayout(new_bytes)
        }
    })
}

/// Whether applying `edits` to the ELF file `bytes` changes it: [`plan`] without building a
/// relayout (which holds a whole new copy of the file).
pub fn changes(bytes: &[u8], edits: &ElfEdits, options: &Options) -> Result<bool> {
    Ok(!matches!(
        plan_layout(bytes, edits, options)?,
        Planned::Unchanged
    ))
}

/// What [`plan`] decided, with a relayout described rather than built, so that a caller writing
/// to disk can stream it instead of holding a second copy of the file in memory.
pub(crate) enum Planned {
    Unchanged,
    InPlace(Vec<Write>),
    Relayout(Box<Layout>),
}

/// A relayout: the original bytes with `writes` applied, cut or zero-padded to `length`, then
/// `tail` (the new segment).
pub(crate) struct Layout {
    pub(crate) writes: Vec<Write>,
    pub(crate) length: u64,
    pub(crate) tail: Vec<u8>,
    entries: Vec<Entry>,
    edits: ElfEdits,
}

impl Layout {
    /// The new file in memory.
    pub(crate) fn build(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let overflow = || Error::malformed("relayout size", 0);
        let end = usize::try_from(self.length).map_err(|_| overflow())?;
        let mut out = Vec::with_capacity(end.max(bytes.len()).saturating_add(self.tail.len()));
        out.extend_from_slice(bytes);
        for write in &self.writes {
            let at = usize::try_from(write.offset).map_err(|_| overflow())?;
            let slot = out
                .get_mut(at..at.saturating_add(write.bytes.len()))
                .ok_or_else(|| Error::malformed("write outside the file", write.offset))?;
            slot.copy_from_slice(&write.bytes);
        }
        out.resize(end, 0);
        out.extend_from_slice(&self.tail);
        Ok(out)
    }

    /// Re-parses the new file (however it was produced) and checks it says what was asked for.
    pub(crate) fn verify(&self, new_bytes: &[u8]) -> Result<()> {
        Planner::verify(new_bytes, &self.entries, &self.edits)
    }
}

/// Plans the edits without building a relayout.
pub(crate) fn plan_layout(bytes: &[u8], edits: &ElfEdits, options: &Options) -> Result<Planned> {
    let parsed = Parsed::parse(bytes)?;
    let codec = parsed.codec;
    let mut planner = Planner {
        bytes,
        parsed,
        codec,
        writes: Vec::new(),
        verneed_targets: Vec::new(),
        new_stack: None,
        new_note: None,
        section_count: None,
        symbol_name_targets: Vec::new(),
    };
    planner.run(edits, options)
}

impl Planner<'_> {
    fn run(&mut self, edits: &ElfEdits, options: &Options) -> Result<Planned> {
        let page_size = match options.page_size {
            Some(size) if size.is_power_of_two() && size >= 0x1000 => size,
            Some(size) => {
                return Err(Error::InvalidOption {
                    what: "page size",
                    value: size.to_string(),
                });
            }
            // The alignment the file's LOADs use, as patchelf keeps one (a library linked
            // with `-z max-page-size=0x10000` gets a 0x10000-aligned new one), but never less
            // than the ABI's largest page size, so that the file loads on every kernel.
            None => self
                .parsed
                .segments
                .iter()
                .filter(|s| s.p_type == PT_LOAD)
                .map(|s| s.align)
                .filter(|align| align.is_power_of_two() && (0x1000..=0x4000_0000).contains(align))
                .max()
                .unwrap_or(0)
                .max(abi_page_size(self.parsed.machine)),
        };
        if self.is_static_pie() && sets_run_path(edits) {
            return Err(Error::Unsupported {
                what: "a run path in a static-pie (glibc's static-pie startup crashes on one)",
            });
        }
        if let Some(abi) = edits.os_abi {
            push_diff(&mut self.writes, self.bytes, 7, &[abi]);
        }
        if let Some(executable) = edits.execstack {
            self.set_execstack(executable);
        }
        let mut entries = self.model_entries()?;
        let before = entries.clone();
        let needs_dynamic = edits.soname.is_some()
            || edits.add_debug_tag
            || edits.run_path.is_some()
            || !edits.add_run_path.is_empty()
            || !edits.remove_needed.is_empty()
            || !edits.replace_needed.is_empty()
            || !edits.add_needed.is_empty()
            || edits.no_default_lib
            || !edits.clear_symbol_version.is_empty()
            || !edits.rename_dynamic_symbols.is_empty();
        if needs_dynamic && self.parsed.dynamic.is_none() {
            return Err(Error::Missing {
                operation: "edit the dynamic section",
                missing: "dynamic section",
            });
        }
        self.edit_entries(&mut entries, edits);
        self.update_resolution_cache(&before, &entries, edits)?;
        self.clear_symbol_versions(edits)?;
        let redirected_verneed = self.redirected_verneed(edits);
        let renamed = self.renamed_symbols(edits)?;
        let new_names: Vec<Vec<u8>> = renamed.iter().map(|(_, name)| name.clone()).collect();
        let extra = self.lay_out_strings(&mut entries, &redirected_verneed, &new_names)?;
        if !renamed.is_empty() {
            self.rewrite_symbols(&renamed)?;
        }

        // Interpreter.
        let mut new_interp: Option<Vec<u8>> = None;
        if let Some(wanted) = &edits.interpreter {
            let Some((capacity, current)) = &self.parsed.interp else {
                return Err(Error::Missing {
                    operation: "set the interpreter",
                    missing: "PT_INTERP",
                });
            };
            if current != wanted {
                let mut padded = wanted.clone();
                padded.push(0);
                let segment = self.segment(PT_INTERP).copied();
                if padded.len() <= *capacity
                    && let Some(segment) = segment
                {
                    padded.resize(*capacity, 0);
                    push_diff(&mut self.writes, self.bytes, segment.offset, &padded);
                } else {
                    new_interp = Some(padded);
                }
            }
        }

        let grow_dynstr = !extra.is_empty();
        let capacity = self.parsed.dynamic.as_ref().map_or(0, |d| d.capacity);
        let grow_dynamic = entries.len() as u64 + 1 > capacity;
        if !(grow_dynstr
            || grow_dynamic
            || new_interp.is_some()
            || self.new_stack.is_some()
            || self.new_note.is_some())
        {
            self.write_dynamic_in_place(&entries);
            self.write_verneed();
            if self.writes.is_empty() {
                return Ok(Planned::Unchanged);
            }
            return Ok(Planned::InPlace(std::mem::take(&mut self.writes)));
        }
        if grow_dynamic && entries.iter().any(|e| e.tag == DT_MIPS_RLD_MAP_REL) {
            return Err(Error::Unsupported {
                what: "moving .dynamic of a MIPS file with DT_MIPS_RLD_MAP_REL",
            });
        }
        self.write_verneed();
        let (length, tail) = self.relayout(
            &entries,
            &extra,
            new_interp.as_ref(),
            grow_dynamic,
            page_size,
            options.keep_old_sections,
        )?;
        Ok(Planned::Relayout(Box::new(Layout {
            writes: std::mem::take(&mut self.writes),
            length,
            tail,
            entries,
            edits: edits.clone(),
        })))
    }

    /// Removes a resolution cache note that the edits make stale (they change the run path the
    /// loader uses or the needed libraries, or remove the run path), and plans the note to add.
    fn update_resolution_cache(
        &mut self,
        before: &[Entry],
        after: &[Entry],
        edits: &ElfEdits,
    ) -> Result<()> {
        let texts = |entries: &[Entry], tag: u64| -> Vec<Vec<u8>> {
            entries
                .iter()
                .filter(|e| e.tag == tag)
                .filter_map(|e| e.text().map(<[u8]>::to_vec))
                .collect()
        };
        let run_path = |entries: &[Entry]| {
            let runpath = texts(entries, DT_RUNPATH);
            if runpath.is_empty() {
                texts(entries, DT_RPATH)
            } else {
                runpath
            }
            .into_iter()
            .next()
        };
        let existing = self
            .parsed
            .sections
            .iter()
            .find(|s| s.index != 0 && s.name == crate::ldcache::SECTION_NAME)
            .cloned();
        let mut existing_kept = existing.is_some();
        if let Some(section) = &existing {
            let stale = texts(before, DT_NEEDED) != texts(after, DT_NEEDED)
                || run_path(before) != run_path(after)
                || matches!(edits.run_path, Some(RunPathEdit::Remove));
            if stale {
                self.drop_note(section)?;
                existing_kept = false;
            }
        }
        let Some(descriptor) = &edits.resolution_cache else {
            return Ok(());
        };
        if existing_kept {
            let section = existing
                .as_ref()
                .map(|section| crate::ldcache::note_descriptor(self.codec, self.bytes, section));
            if section.flatten().as_ref() != Some(descriptor) {
                return Err(Error::Unsupported {
                    what: "--build-resolution-cache: a resolution cache note is already present; \
                           rebuild from an unpatched binary",
                });
            }
            return Ok(());
        }
        self.new_note = Some(crate::ldcache::encode_note(self.codec, descriptor));
        Ok(())
    }

    /// Drops the note `section`: its bytes are cleared (they hold resolved store paths), the
    /// `PT_LOAD` and `PT_NOTE` that map exactly it become `PT_NULL`, and its section header is
    /// removed when it is the last one, otherwise cleared into an unnamed `SHT_NULL` (so that no
    /// other section index, such as a symbol's, changes).
    fn drop_note(&mut self, section: &crate::read::Section) -> Result<()> {
        let codec = self.codec;
        if let Some(range) = file_range(self.bytes, section.offset, section.size) {
            let zeros = vec![0u8; range.len()];
            push_diff(&mut self.writes, self.bytes, section.offset, &zeros);
        }
        for index in 0..self.parsed.segments.len() {
            let segment = self.parsed.segments[index];
            if matches!(segment.p_type, PT_LOAD | PT_NOTE)
                && segment.offset == section.offset
                && segment.filesz == section.size
            {
                let null = Segment {
                    p_type: PT_NULL,
                    flags: 0,
                    offset: 0,
                    vaddr: 0,
                    paddr: 0,
                    filesz: 0,
                    memsz: 0,
                    align: 0,
                };
                self.parsed.segments[index] = null;
                let at = self.parsed.phoff + index as u64 * codec.phdr_size();
                push_diff(
                    &mut self.writes,
                    self.bytes,
                    at,
                    &encode_segment(codec, &null),
                );
            }
        }
        let (entsize_at, count_at, strndx_at) = if codec.is64 {
            (58, 60, 62)
        } else {
            (46, 48, 50)
        };
        let entry_size = u64::from(codec.u16(self.bytes, entsize_at).unwrap_or(0));
        let count = u64::from(codec.u16(self.bytes, count_at).unwrap_or(0));
        let index = section.index as u64;
        if u64::from(codec.u16(self.bytes, strndx_at).unwrap_or(0)) == index {
            return Err(Error::Unsupported {
                what: "removing the resolution cache note: the section name table index points to it",
            });
        }
        let base = self.parsed.shoff.saturating_add(index * entry_size);
        if file_range(self.bytes, base, entry_size).is_none() {
            return Err(Error::malformed("section header", base));
        }
        let zeros = vec![0u8; usize::try_from(entry_size).unwrap_or(0)];
        push_diff(&mut self.writes, self.bytes, base, &zeros);
        if index + 1 == count {
            let new_count = u16::try_from(index).unwrap_or(0);
            push_diff(
                &mut self.writes,
                self.bytes,
                count_at,
                &codec.encode_u16(new_count),
            );
            self.section_count = Some(index);
            // Links to the dropped section go nowhere now.
            let link_at = if codec.is64 { 40 } else { 24 };
            for other in 1..index {
                let at = base - (index - other) * entry_size + link_at;
                if codec.u32(self.bytes, at).map(u64::from) == Some(index) {
                    push_diff(&mut self.writes, self.bytes, at, &codec.encode_u32(0));
                }
            }
        }
        Ok(())
    }

    /// `ET_DYN` with `DF_1_PIE` and a dynamic section but no interpreter: it relocates itself.
    fn is_static_pie(&self) -> bool {
        self.parsed.e_type == goblin::elf::header::ET_DYN
            && self.parsed.interp.is_none()
            && self.parsed.dynamic.is_some()
            && self.parsed.dyn_value(DT_FLAGS_1).unwrap_or(0) & DF_1_PIE != 0
    }

    /// Sets or clears `PF_X` of `PT_GNU_STACK` (patchelf's `--set-execstack`/`--clear-execstack`).
    ///
    /// A file without `PT_GNU_STACK` gets one, as patchelf adds one: flags `RW` plus `X` when
    /// the stack is to be executable, alignment 1, everything else zero. It goes into a `PT_NULL`
    /// slot when there is one (no growth), otherwise the program header table grows.
    fn set_execstack(&mut self, executable: bool) {
        let Some(index) = self
            .parsed
            .segments
            .iter()
            .position(|s| s.p_type == PT_GNU_STACK)
        else {
            let stack = Segment {
                p_type: PT_GNU_STACK,
                flags: PF_R | PF_W | if executable { PF_X } else { 0 },
                offset: 0,
                vaddr: 0,
                paddr: 0,
                filesz: 0,
                memsz: 0,
                align: 1,
            };
            if let Some(null) = self
                .parsed
                .segments
                .iter()
                .position(|s| s.p_type == PT_NULL)
            {
                self.parsed.segments[null] = stack;
                let at = self.parsed.phoff + null as u64 * self.codec.phdr_size();
                let encoded = encode_segment(self.codec, &stack);
                push_diff(&mut self.writes, self.bytes, at, &encoded);
            } else {
                self.new_stack = Some(stack);
            }
            return;
        };
        let segment = &mut self.parsed.segments[index];
        let flags = if executable {
            segment.flags | PF_X
        } else {
            segment.flags & !PF_X
        };
        if flags == segment.flags {
            return;
        }
        // The relayout re-encodes program headers from `segments`, so it keeps the new flags.
        segment.flags = flags;
        let field = if self.codec.is64 { 4 } else { 24 };
        let at = self.parsed.phoff + index as u64 * self.codec.phdr_size() + field;
        let encoded = self.codec.encode_u32(flags);
        push_diff(&mut self.writes, self.bytes, at, &encoded);
    }

    /// Maps a file offset to a virtual address through the `PT_LOAD` segments.
    fn vaddr_of(&self, offset: u64) -> Option<u64> {
        self.parsed
            .segments
            .iter()
            .find(|s| s.p_type == PT_LOAD && offset >= s.offset && offset - s.offset < s.filesz)
            .and_then(|s| s.vaddr.checked_add(offset - s.offset))
    }

    fn segment(&self, p_type: u32) -> Option<&Segment> {
        self.parsed.segments.iter().find(|s| s.p_type == p_type)
    }

    fn model_entries(&self) -> Result<Vec<Entry>> {
        let Some(dynamic) = &self.parsed.dynamic else {
            return Ok(Vec::new());
        };
        let mut entries = Vec::with_capacity(dynamic.entries.len());
        for (index, entry) in dynamic.entries.iter().enumerate() {
            let value = if is_string_tag(entry.tag) {
                let table = self
                    .parsed
                    .dynstr
                    .as_ref()
                    .ok_or_else(|| Error::malformed("dynamic string table", dynamic.offset))?;
                let text = table
                    .get(entry.value)
                    .ok_or_else(|| Error::malformed("dynamic string offset", entry.value))?;
                Value::Text {
                    bytes: text.to_vec(),
                    origin: Some(entry.value),
                    changed: false,
                }
            } else {
                Value::Number(entry.value)
            };
            entries.push(Entry {
                tag: entry.tag,
                value,
                original: Some(index),
            });
        }
        Ok(entries)
    }

    fn edit_entries(&self, entries: &mut Vec<Entry>, edits: &ElfEdits) {
        if let Some(soname) = &edits.soname
            && self.parsed.e_type == goblin::elf::header::ET_DYN
        {
            match entries.iter_mut().find(|e| e.tag == DT_SONAME) {
                Some(entry) => entry.set_text(soname),
                None => entries.insert(0, Entry::new_text(DT_SONAME, soname)),
            }
        }
        // Run path.
        let current = entries
            .iter()
            .find(|e| e.tag == DT_RUNPATH)
            .or_else(|| entries.iter().find(|e| e.tag == DT_RPATH))
            .and_then(Entry::text)
            .map(<[u8]>::to_vec);
        let mut wanted: Option<Vec<u8>> = match &edits.run_path {
            None => None,
            Some(RunPathEdit::Remove) => {
                entries.retain(|e| e.tag != DT_RPATH && e.tag != DT_RUNPATH);
                None
            }
            Some(RunPathEdit::Set(value)) => Some(value.clone()),
            Some(RunPathEdit::Shrink { allowed_prefixes }) => current
                .as_ref()
                .map(|current| self.shrink(current, entries, allowed_prefixes)),
        };
        if !edits.add_run_path.is_empty() {
            let mut value = wanted
                .clone()
                .or_else(|| current.clone())
                .unwrap_or_default();
            for add in &edits.add_run_path {
                let present = value.split(|&b| b == b':').any(|dir| dir == add.as_slice());
                if !present {
                    if !value.is_empty() {
                        value.push(b':');
                    }
                    value.extend_from_slice(add);
                }
            }
            wanted = Some(value);
        }
        let has = |tag: u64| entries.iter().any(|e| e.tag == tag);
        let tags_right = if edits.force_rpath {
            has(DT_RPATH) && !has(DT_RUNPATH)
        } else {
            has(DT_RUNPATH)
        };
        let shrinking = matches!(edits.run_path, Some(RunPathEdit::Shrink { .. }));
        if let Some(wanted) = wanted
            && (current.as_deref() != Some(wanted.as_slice()) || (!tags_right && !shrinking))
        {
            let (keep, drop) = if edits.force_rpath {
                (DT_RPATH, DT_RUNPATH)
            } else {
                (DT_RUNPATH, DT_RPATH)
            };
            if let Some(entry) = entries.iter_mut().find(|e| e.tag == keep) {
                entry.set_text(&wanted);
                entries.retain(|e| e.tag != drop);
            } else if let Some(entry) = entries.iter_mut().find(|e| e.tag == drop) {
                entry.tag = keep;
                entry.set_text(&wanted);
            } else {
                entries.insert(0, Entry::new_text(keep, &wanted));
            }
        }
        // Needed.
        if !edits.remove_needed.is_empty() {
            entries.retain(|e| {
                e.tag != DT_NEEDED
                    || !edits
                        .remove_needed
                        .iter()
                        .any(|name| e.text() == Some(name.as_slice()))
            });
        }
        for (old, new) in &edits.replace_needed {
            for entry in entries
                .iter_mut()
                .filter(|e| e.tag == DT_NEEDED && e.text() == Some(old.as_slice()))
            {
                entry.set_text(new);
            }
        }
        let mut added = 0;
        for name in &edits.add_needed {
            let present = entries
                .iter()
                .any(|e| e.tag == DT_NEEDED && e.text() == Some(name.as_slice()));
            if !present {
                entries.insert(added, Entry::new_text(DT_NEEDED, name));
                added += 1;
            }
        }
        // patchelf's `--add-debug-tag`: a `DT_DEBUG` in front, unless there is one.
        if edits.add_debug_tag && !entries.iter().any(|e| e.tag == DT_DEBUG) {
            entries.insert(
                0,
                Entry {
                    tag: DT_DEBUG,
                    value: Value::Number(0),
                    original: None,
                },
            );
        }
        if edits.no_default_lib {
            match entries.iter_mut().find(|e| e.tag == DT_FLAGS_1) {
                Some(Entry {
                    value: Value::Number(flags),
                    ..
                }) => *flags |= DF_1_NODEFLIB,
                _ => entries.insert(
                    0,
                    Entry {
                        tag: DT_FLAGS_1,
                        value: Value::Number(DF_1_NODEFLIB),
                        original: None,
                    },
                ),
            }
        }
    }

    /// patchelf's `--shrink-rpath`: keep relative entries, drop entries outside the allowed
    /// prefixes, keep absolute directories that hold a not-yet-found NEEDED for this machine.
    fn shrink(&self, current: &[u8], entries: &[Entry], allowed_prefixes: &[Vec<u8>]) -> Vec<u8> {
        let needed: Vec<&[u8]> = entries
            .iter()
            .filter(|e| e.tag == DT_NEEDED)
            .filter_map(Entry::text)
            .collect();
        let mut found = vec![false; needed.len()];
        let mut kept: Vec<&[u8]> = Vec::new();
        for dir in current.split(|&b| b == b':').filter(|dir| !dir.is_empty()) {
            if dir.first() != Some(&b'/') {
                kept.push(dir);
                continue;
            }
            if !allowed_prefixes.is_empty()
                && !allowed_prefixes
                    .iter()
                    .any(|prefix| dir.starts_with(prefix))
            {
                log::debug!(
                    "dropping {} from the run path: prefix not allowed",
                    String::from_utf8_lossy(dir)
                );
                continue;
            }
            let mut useful = false;
            for (index, name) in needed.iter().enumerate() {
                if found[index] {
                    continue;
                }
                let mut candidate = dir.to_vec();
                candidate.push(b'/');
                candidate.extend_from_slice(name);
                if self.library_matches(&candidate) {
                    found[index] = true;
                    useful = true;
                }
            }
            if useful {
                kept.push(dir);
            } else {
                log::debug!(
                    "dropping {} from the run path: no NEEDED there",
                    String::from_utf8_lossy(dir)
                );
            }
        }
        kept.join(&b':')
    }

    fn library_matches(&self, candidate: &[u8]) -> bool {
        use std::io::Read;
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(candidate));
        let Ok(file) = fs_err::File::open(path) else {
            return false;
        };
        let mut head = Vec::with_capacity(20);
        if file.take(20).read_to_end(&mut head).is_err() || head.len() < 20 {
            return false;
        }
        if head.get(..4) != Some(b"\x7fELF".as_slice()) {
            return false;
        }
        let codec = Codec {
            is64: head[4] == 2,
            little: head[5] != 2,
        };
        codec.u16(&head, 18) == Some(self.parsed.machine)
    }

    fn clear_symbol_versions(&mut self, edits: &ElfEdits) -> Result<()> {
        if edits.clear_symbol_version.is_empty() {
            return Ok(());
        }
        let (Some((symtab, count)), Some(versym), Some(table)) = (
            self.parsed.dynsym,
            self.parsed.versym,
            self.parsed.dynstr.as_ref(),
        ) else {
            return Err(Error::Missing {
                operation: "clear a symbol version",
                missing: "symbol version table",
            });
        };
        let entry_size = if self.codec.is64 { 24 } else { 16 };
        let mut writes = Vec::new();
        for index in 0..count {
            let Some(name) = self.codec.u32(self.bytes, symtab + index * entry_size) else {
                continue;
            };
            let Some(name) = table.get(u64::from(name)) else {
                continue;
            };
            if edits
                .clear_symbol_version
                .iter()
                .any(|wanted| wanted.as_slice() == name)
            {
                let at = versym + index * 2;
                if self.codec.u16(self.bytes, at).is_none() {
                    return Err(Error::malformed("symbol version entry", at));
                }
                writes.push((at, self.codec.encode_u16(1)));
            }
        }
        for (at, bytes) in writes {
            push_diff(&mut self.writes, self.bytes, at, &bytes);
        }
        Ok(())
    }

    /// Dynamic symbols `--rename-dynamic-symbols` renames: (symbol index, new name).
    fn renamed_symbols(&self, edits: &ElfEdits) -> Result<Vec<(u64, Vec<u8>)>> {
        if edits.rename_dynamic_symbols.is_empty() {
            return Ok(Vec::new());
        }
        let (Some((symtab, count)), Some(table)) =
            (self.parsed.dynsym, self.parsed.dynstr.as_ref())
        else {
            return Err(Error::Missing {
                operation: "rename a dynamic symbol",
                missing: "dynamic symbol table",
            });
        };
        let entry_size = if self.codec.is64 { 24 } else { 16 };
        let mut out = Vec::new();
        for index in 0..count {
            let at = symtab + index * entry_size;
            let name = self
                .codec
                .u32(self.bytes, at)
                .ok_or_else(|| Error::malformed("dynamic symbol", at))?;
            let Some(name) = table.get(u64::from(name)) else {
                continue;
            };
            if let Some((_, new)) = edits
                .rename_dynamic_symbols
                .iter()
                .find(|(old, new)| old.as_slice() == name && new.as_slice() != name)
            {
                out.push((index, new.clone()));
            }
        }
        Ok(out)
    }

    /// Points renamed symbols at their new names and rebuilds `.gnu.hash` and `.hash` for the new
    /// names, as patchelf does: `.gnu.hash` needs its symbols grouped by bucket, so the hashed
    /// part of `.dynsym` (and `.gnu.version` with it) is reordered, stably, and the symbol indices
    /// of the allocated relocation sections follow.
    fn rewrite_symbols(&mut self, renamed: &[(u64, Vec<u8>)]) -> Result<()> {
        let codec = self.codec;
        let Some((symtab, count)) = self.parsed.dynsym else {
            return Ok(());
        };
        let Some(table) = self.parsed.dynstr.clone() else {
            return Ok(());
        };
        let entry_size: u64 = if codec.is64 { 24 } else { 16 };
        let table_range = file_range(self.bytes, symtab, count * entry_size)
            .ok_or_else(|| Error::malformed("dynamic symbol table", symtab))?;
        let mut symbols: Vec<Vec<u8>> = self.bytes[table_range]
            .chunks(entry_size as usize)
            .map(<[u8]>::to_vec)
            .collect();
        let mut names: Vec<Vec<u8>> = symbols
            .iter()
            .map(|symbol| {
                let name = codec.u32(symbol, 0).unwrap_or(0);
                table.get(u64::from(name)).unwrap_or_default().to_vec()
            })
            .collect();
        for ((index, new), &target) in renamed.iter().zip(&self.symbol_name_targets) {
            let index = usize::try_from(*index).unwrap_or(usize::MAX);
            let target = u32::try_from(target)
                .map_err(|_| Error::malformed("dynamic string table size", target))?;
            symbols[index][..4].copy_from_slice(&codec.encode_u32(target));
            names[index].clone_from(new);
        }
        let versym_range = self
            .parsed
            .versym
            .and_then(|at| file_range(self.bytes, at, count * 2));
        // With the edits made so far (`--clear-symbol-version`), which move with their symbols.
        let mut versyms: Option<Vec<u8>> = versym_range.clone().map(|r| {
            let start = r.start as u64;
            let mut copy = self.bytes[r].to_vec();
            for write in &self.writes {
                write.apply_within(&mut copy, start);
            }
            copy
        });

        // GNU hash.
        let gnu = self
            .parsed
            .dyn_value(crate::read::DT_GNU_HASH)
            .and_then(|vaddr| self.parsed.offset_of(vaddr));
        if let Some(at) = gnu {
            let header = |field: u64| codec.u32(self.bytes, at + field * 4);
            let (Some(buckets), Some(first), Some(mask_words), Some(shift)) =
                (header(0), header(1), header(2), header(3))
            else {
                return Err(Error::malformed(".gnu.hash header", at));
            };
            let first = u64::from(first);
            let word = codec.word_size();
            let bloom_at = at + 16;
            let buckets_at = bloom_at + u64::from(mask_words) * word;
            let chains_at = buckets_at + u64::from(buckets) * 4;
            if buckets == 0 || mask_words == 0 || first > count {
                return Err(Error::malformed(".gnu.hash header", at));
            }
            let hashed = count - first;
            let total = chains_at - at + hashed * 4;
            if file_range(self.bytes, at, total).is_none() {
                return Err(Error::malformed(".gnu.hash table", at));
            }
            let first_index = usize::try_from(first).unwrap_or(usize::MAX);
            let hashes: Vec<u32> = names[first_index..].iter().map(|n| gnu_hash(n)).collect();
            let mut order: Vec<usize> = (0..hashes.len()).collect();
            order.sort_by_key(|&i| hashes[i] % buckets);
            if order.iter().enumerate().any(|(new, &old)| new != old) {
                self.reorder_symbols(
                    first_index,
                    &order,
                    &mut symbols,
                    &mut names,
                    versyms.as_mut(),
                )?;
            }
            let hashes: Vec<u32> = order.iter().map(|&old| hashes[old]).collect();
            let bits = u32::try_from(word * 8).unwrap_or(64);
            let mut bloom = vec![0u64; mask_words as usize];
            for &hash in &hashes {
                let slot = ((hash / bits) % mask_words) as usize;
                bloom[slot] |= 1u64 << (hash % bits);
                bloom[slot] |= 1u64 << ((hash >> shift) % bits);
            }
            let mut out = Vec::new();
            for value in bloom {
                out.extend(codec.encode_word(value));
            }
            let mut bucket_values = vec![0u32; buckets as usize];
            for (position, &hash) in hashes.iter().enumerate() {
                let bucket = (hash % buckets) as usize;
                if bucket_values[bucket] == 0 {
                    bucket_values[bucket] = u32::try_from(first + position as u64).unwrap_or(0);
                }
            }
            for value in bucket_values {
                out.extend(codec.encode_u32(value));
            }
            for (position, &hash) in hashes.iter().enumerate() {
                let last = hashes
                    .get(position + 1)
                    .is_none_or(|next| next % buckets != hash % buckets);
                out.extend(codec.encode_u32(if last { hash | 1 } else { hash & !1 }));
            }
            push_diff(&mut self.writes, self.bytes, bloom_at, &out);
        }

        // SysV hash.
        let sysv = self
            .parsed
            .dyn_value(crate::read::DT_HASH)
            .and_then(|vaddr| self.parsed.offset_of(vaddr));
        if let Some(at) = sysv {
            let (Some(buckets), Some(chains)) =
                (codec.u32(self.bytes, at), codec.u32(self.bytes, at + 4))
            else {
                return Err(Error::malformed(".hash header", at));
            };
            let size = 8 + (u64::from(buckets) + u64::from(chains)) * 4;
            if buckets == 0
                || u64::from(chains) > count
                || file_range(self.bytes, at, size).is_none()
            {
                return Err(Error::malformed(".hash table", at));
            }
            let mut bucket_values = vec![0u32; buckets as usize];
            let mut chain_values = vec![0u32; chains as usize];
            let first = count - u64::from(chains);
            for index in first..count {
                let hash = sysv_hash(&names[index as usize]) % buckets;
                let local = (index - first) as usize;
                chain_values[local] = bucket_values[hash as usize];
                bucket_values[hash as usize] = u32::try_from(local).unwrap_or(0);
            }
            let mut out = Vec::new();
            for value in bucket_values.into_iter().chain(chain_values) {
                out.extend(codec.encode_u32(value));
            }
            push_diff(&mut self.writes, self.bytes, at + 8, &out);
        }

        let encoded: Vec<u8> = symbols.concat();
        push_diff(&mut self.writes, self.bytes, symtab, &encoded);
        if let (Some(range), Some(versyms)) = (versym_range, versyms) {
            // `versyms` holds the earlier writes into the table, moved with their symbols.
            let (start, end) = (range.start as u64, range.end as u64);
            self.writes.retain(|write| {
                write.offset + write.bytes.len() as u64 <= start || write.offset >= end
            });
            push_diff(&mut self.writes, self.bytes, start, &versyms);
        }
        Ok(())
    }

    /// Moves the symbols from `first` on into `order` (new position -> old position, relative to
    /// `first`), with their `.gnu.version` entries, and renumbers the symbol indices of the
    /// allocated `SHT_REL`/`SHT_RELA` sections.
    fn reorder_symbols(
        &mut self,
        first: usize,
        order: &[usize],
        symbols: &mut [Vec<u8>],
        names: &mut [Vec<u8>],
        versyms: Option<&mut Vec<u8>>,
    ) -> Result<()> {
        const EM_MIPS: u16 = 8;
        if self.parsed.machine == EM_MIPS {
            return Err(Error::Unsupported {
                what: "reordering the dynamic symbols of a MIPS file (its GOT follows their order)",
            });
        }
        let relocations: Vec<(u64, u64, u64)> = self
            .parsed
            .sections
            .iter()
            .filter(|s| {
                matches!(
                    s.sh_type,
                    goblin::elf::section_header::SHT_REL | goblin::elf::section_header::SHT_RELA
                ) && s.flags & u64::from(goblin::elf::section_header::SHF_ALLOC) != 0
            })
            .map(|s| (s.offset, s.size, s.entsize))
            .collect();
        if relocations.is_empty() && self.parsed.sections.is_empty() {
            return Err(Error::Unsupported {
                what: "reordering the dynamic symbols of a file without section headers",
            });
        }
        let mut new_of_old = vec![0usize; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_of_old[old] = new;
        }
        let old_symbols: Vec<Vec<u8>> = symbols[first..].to_vec();
        let old_names: Vec<Vec<u8>> = names[first..].to_vec();
        for (new, &old) in order.iter().enumerate() {
            symbols[first + new].clone_from(&old_symbols[old]);
            names[first + new].clone_from(&old_names[old]);
        }
        if let Some(versyms) = versyms {
            let old: Vec<u8> = versyms.clone();
            for (new, &old_index) in order.iter().enumerate() {
                let to = (first + new) * 2;
                let from = (first + old_index) * 2;
                versyms[to..to + 2].copy_from_slice(&old[from..from + 2]);
            }
        }
        let codec = self.codec;
        let word = codec.word_size();
        for (offset, size, entsize) in relocations {
            if entsize < 2 * word || file_range(self.bytes, offset, size).is_none() {
                return Err(Error::malformed("relocation section", offset));
            }
            let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            for entry in 0..size / entsize {
                let at = offset + entry * entsize + word;
                let info = codec
                    .word(self.bytes, at)
                    .ok_or_else(|| Error::malformed("relocation", at))?;
                let (symbol, kind) = if codec.is64 {
                    (info >> 32, info & 0xffff_ffff)
                } else {
                    (info >> 8, info & 0xff)
                };
                let symbol = usize::try_from(symbol).unwrap_or(usize::MAX);
                let symbol = if symbol >= first && symbol - first < order.len() {
                    first + new_of_old[symbol - first]
                } else {
                    symbol
                };
                let info = if codec.is64 {
                    ((symbol as u64) << 32) | kind
                } else {
                    ((symbol as u64) << 8) | kind
                };
                out.push((at, codec.encode_word(info)));
            }
            for (at, bytes) in out {
                push_diff(&mut self.writes, self.bytes, at, &bytes);
            }
        }
        Ok(())
    }

    /// `vn_file` fields to point at a new name: (field offset, new name).
    fn redirected_verneed(&self, edits: &ElfEdits) -> Vec<(u64, Vec<u8>)> {
        let Some(table) = &self.parsed.dynstr else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for &(field, string) in &self.parsed.verneed_files {
            let Some(name) = table.get(string) else {
                continue;
            };
            if let Some((_, new)) = edits
                .replace_needed
                .iter()
                .find(|(old, new)| old.as_slice() == name && new.as_slice() != name)
            {
                out.push((field, new.clone()));
            }
        }
        out
    }

    /// Decides where every changed string lives; returns the bytes to append to `.dynstr`.
    /// Changed entries get `origin` set to their final offset.
    fn lay_out_strings(
        &mut self,
        entries: &mut [Entry],
        redirected: &[(u64, Vec<u8>)],
        symbol_names: &[Vec<u8>],
    ) -> Result<Vec<u8>> {
        let any_changed = entries
            .iter()
            .any(|e| matches!(e.value, Value::Text { changed: true, .. }))
            || !redirected.is_empty()
            || !symbol_names.is_empty();
        let Some(table) = self.parsed.dynstr.clone() else {
            if any_changed {
                return Err(Error::Missing {
                    operation: "add a string",
                    missing: "dynamic string table",
                });
            }
            return Ok(Vec::new());
        };
        let span = |offset: u64| -> Range<u64> {
            let len = table.get(offset).map_or(0, <[u8]>::len) as u64;
            offset..offset + len + 1
        };
        // Every reference the original file makes into the table, with its owner.
        let dynamic = self.parsed.dynamic.clone();
        let original_dyn: Vec<(usize, u64)> = dynamic
            .as_ref()
            .map(|d| {
                d.entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| is_string_tag(e.tag))
                    .map(|(index, e)| (index, e.value))
                    .collect()
            })
            .unwrap_or_default();
        let complete = self.parsed.other_string_refs.is_some();
        let mut blockers_fixed: Vec<Range<u64>> = self
            .parsed
            .other_string_refs
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(span)
            .collect();
        blockers_fixed.extend(
            self.parsed
                .verneed_files
                .iter()
                .filter(|(field, _)| !redirected.iter().any(|(f, _)| f == field))
                .map(|&(_, string)| span(string)),
        );
        let blocked = |own: Option<usize>, range: &Range<u64>| -> bool {
            blockers_fixed.iter().any(|b| overlaps(b, range))
                || original_dyn
                    .iter()
                    .any(|&(index, offset)| Some(index) != own && overlaps(&span(offset), range))
        };
        let mut work = table.bytes.clone();
        let mut modified: Vec<Range<u64>> = Vec::new();
        let mut reused: Vec<usize> = Vec::new();
        // 1. In place, where the new string fits and nothing else reads the old one.
        for entry in entries.iter_mut() {
            let Value::Text {
                bytes,
                origin: Some(origin),
                changed: true,
            } = &mut entry.value
            else {
                continue;
            };
            let range = span(*origin);
            let fits = (bytes.len() as u64) < range.end - range.start;
            if complete && fits && !blocked(entry.original, &range) {
                let start = usize::try_from(range.start).unwrap_or(usize::MAX);
                if let Some(slot) = work.get_mut(start..start + (range.end - range.start) as usize)
                {
                    erase(slot, entry.tag);
                    slot[..bytes.len()].copy_from_slice(bytes);
                    slot[bytes.len()] = 0;
                    modified.push(range);
                    if let Some(index) = entry.original {
                        reused.push(index);
                    }
                    entry.value = Value::Text {
                        bytes: std::mem::take(bytes),
                        origin: Some(*origin),
                        changed: false,
                    };
                }
            }
        }
        // 2. Zero strings that nothing references any more, so no old store path survives.
        if complete {
            for &(index, offset) in &original_dyn {
                let still_used = entries.iter().any(|e| {
                    e.original == Some(index)
                        && matches!(e.value, Value::Text { changed: false, .. })
                });
                if still_used || reused.contains(&index) {
                    continue;
                }
                let range = span(offset);
                if blocked(Some(index), &range) || range.end - range.start <= 1 {
                    continue;
                }
                let start = usize::try_from(range.start).unwrap_or(usize::MAX);
                if let Some(slot) = work.get_mut(start..start + (range.end - range.start) as usize)
                {
                    let tag = dynamic.as_ref().map_or(0, |d| d.entries[index].tag);
                    erase(slot, tag);
                    modified.push(range);
                }
            }
        }
        // 3. Everything else: an existing identical string, else appended.
        let mut extra: Vec<u8> = Vec::new();
        let base = work.len() as u64;
        let place = |text: &[u8], work: &[u8], extra: &mut Vec<u8>| -> u64 {
            let mut needle = text.to_vec();
            needle.push(0);
            let mut from = 0;
            while let Some(found) = work
                .get(from..)
                .and_then(|rest| find_subslice(rest, &needle))
            {
                let at = (from + found) as u64;
                let range = at..at + needle.len() as u64;
                if !modified.iter().any(|m| overlaps(m, &range)) {
                    return at;
                }
                from += found + 1;
            }
            if let Some(found) = find_subslice(extra, &needle) {
                return base + found as u64;
            }
            let at = base + extra.len() as u64;
            extra.extend_from_slice(&needle);
            at
        };
        for entry in entries.iter_mut() {
            if let Value::Text {
                bytes,
                origin,
                changed: changed @ true,
            } = &mut entry.value
            {
                *origin = Some(place(bytes, &work, &mut extra));
                *changed = false;
            }
        }
        let mut verneed_writes = Vec::new();
        for (field, name) in redirected {
            let at = place(name, &work, &mut extra);
            verneed_writes.push((*field, at));
        }
        self.verneed_targets = verneed_writes;
        self.symbol_name_targets = symbol_names
            .iter()
            .map(|name| place(name, &work, &mut extra))
            .collect();
        push_diff(&mut self.writes, self.bytes, table.offset, &work);
        if extra.is_empty() {
            return Ok(Vec::new());
        }
        let mut full = work;
        full.extend_from_slice(&extra);
        Ok(full)
    }
}

/// Erases an old string and its terminator (`slot`) that the dynamic entry with `tag` held. A run
/// path's bytes become `X`, as patchelf taints an old run path nothing else shares (scripts and
/// patchelf's own tests look for that), keeping the terminator; any other string becomes NUL.
fn erase(slot: &mut [u8], tag: u64) {
    let filler = if tag == DT_RPATH || tag == DT_RUNPATH {
        b'X'
    } else {
        0
    };
    slot.fill(filler);
    if let Some(last) = slot.last_mut() {
        *last = 0;
    }
}

/// The GNU symbol hash (`.gnu.hash`).
fn gnu_hash(name: &[u8]) -> u32 {
    name.iter().fold(5381u32, |h, &c| {
        h.wrapping_mul(33).wrapping_add(u32::from(c))
    })
}

/// The System V symbol hash (`.hash`).
fn sysv_hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
        }
        h &= !g;
    }
    h
}

/// MIPS addresses the run-time linker map relative to this dynamic entry itself, so a file with
/// it cannot have its `.dynamic` moved.
const DT_MIPS_RLD_MAP_REL: u64 = 0x7000_0035;

/// Largest gap of zeros a relayout may insert before the new segment.
const MAX_PADDING: u64 = 64 << 20;

/// Dynamic tags holding the address of a table that may move to the new segment.
const MOVABLE_POINTER_TAGS: &[u64] = &[
    crate::read::DT_HASH,
    crate::read::DT_GNU_HASH,
    crate::read::DT_SYMTAB,
    crate::read::DT_VERSYM,
    crate::read::DT_VERNEED,
    crate::read::DT_VERDEF,
];

/// The fields of a new section header; the rest (link, info, entry size) are zero.
struct SectionHeader {
    name: u32,
    sh_type: u32,
    flags: u64,
    address: u64,
    offset: u64,
    size: u64,
    align: u64,
}

/// Serialised section header.
fn encode_section_header(codec: Codec, header: &SectionHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend(codec.encode_u32(header.name));
    out.extend(codec.encode_u32(header.sh_type));
    out.extend(codec.encode_word(header.flags));
    out.extend(codec.encode_word(header.address));
    out.extend(codec.encode_word(header.offset));
    out.extend(codec.encode_word(header.size));
    out.extend(codec.encode_u32(0));
    out.extend(codec.encode_u32(0));
    out.extend(codec.encode_word(header.align));
    out.extend(codec.encode_word(0));
    out
}

/// Serialised program header.
fn encode_segment(codec: Codec, segment: &Segment) -> Vec<u8> {
    let mut out = Vec::with_capacity(56);
    if codec.is64 {
        out.extend(codec.encode_u32(segment.p_type));
        out.extend(codec.encode_u32(segment.flags));
        for value in [
            segment.offset,
            segment.vaddr,
            segment.paddr,
            segment.filesz,
            segment.memsz,
            segment.align,
        ] {
            out.extend(codec.encode_word(value));
        }
    } else {
        out.extend(codec.encode_u32(segment.p_type));
        for value in [
            segment.offset,
            segment.vaddr,
            segment.paddr,
            segment.filesz,
            segment.memsz,
        ] {
            out.extend(codec.encode_word(value));
        }
        out.extend(codec.encode_u32(segment.flags));
        out.extend(codec.encode_word(segment.align));
    }
    out
}

impl Planner<'_> {
    /// Final dynamic entries as numbers; `strtab` overrides `DT_STRTAB`/`DT_STRSZ` after growth.
    fn final_entries(entries: &[Entry], strtab: Option<(u64, u64)>) -> Vec<DynEntry> {
        entries
            .iter()
            .map(|entry| {
                let value = match (&entry.value, entry.tag, strtab) {
                    (_, DT_STRTAB, Some((address, _))) => address,
                    (_, DT_STRSZ, Some((_, size))) => size,
                    (Value::Number(value), _, _) => *value,
                    (Value::Text { origin, .. }, _, _) => origin.unwrap_or(0),
                };
                DynEntry {
                    tag: entry.tag,
                    value,
                }
            })
            .collect()
    }

    fn encode_dynamic(&self, entries: &[DynEntry], slots: u64) -> Vec<u8> {
        let codec = self.codec;
        let mut out = Vec::new();
        for entry in entries {
            out.extend(codec.encode_word(entry.tag));
            out.extend(codec.encode_word(entry.value));
        }
        let total = usize::try_from(slots * codec.dyn_size()).unwrap_or(out.len());
        out.resize(total.max(out.len()), 0);
        out
    }

    fn write_dynamic_in_place(&mut self, entries: &[Entry]) {
        let Some(dynamic) = &self.parsed.dynamic else {
            return;
        };
        let values = Self::final_entries(entries, None);
        let encoded = self.encode_dynamic(&values, dynamic.capacity);
        let offset = dynamic.offset;
        push_diff(&mut self.writes, self.bytes, offset, &encoded);
    }

    fn write_verneed(&mut self) {
        for (field, value) in std::mem::take(&mut self.verneed_targets) {
            let encoded = self.codec.encode_u32(value as u32);
            push_diff(&mut self.writes, self.bytes, field, &encoded);
        }
    }

    /// Writes one section header's address, offset and size.
    fn write_section(&mut self, index: usize, address: u64, offset: u64, size: u64) {
        let codec = self.codec;
        let (entry_size, addr_at, off_at, size_at) = if codec.is64 {
            (64, 16, 24, 32)
        } else {
            (40, 12, 16, 20)
        };
        let base = self.parsed.shoff + index as u64 * entry_size;
        for (at, value) in [(addr_at, address), (off_at, offset), (size_at, size)] {
            let encoded = codec.encode_word(value);
            push_diff(&mut self.writes, self.bytes, base + at, &encoded);
        }
    }

    /// Sections that only dynamic pointer tags (and section headers) refer to by address, so they
    /// can move when the tag moves with them: `.hash`, `.gnu.hash`, `.dynsym` and the version
    /// tables. Needs section headers to know their extent.
    fn pointer_sections(&self) -> Vec<usize> {
        let mut found = Vec::new();
        for &tag in MOVABLE_POINTER_TAGS {
            let Some(address) = self.parsed.dyn_value(tag) else {
                continue;
            };
            if let Some(section) = self.parsed.sections.iter().find(|s| {
                s.addr == address
                    && s.size > 0
                    && s.flags & u64::from(goblin::elf::section_header::SHF_WRITE) == 0
                    && s.sh_type != SHT_NOBITS
            }) {
                found.push(section.index);
            }
        }
        found
    }

    /// Whether the file bytes `range` are mapped by a `PT_LOAD` but used by nothing: no section,
    /// no other segment, no header table and no dynamic entry's address lies in them. Only files
    /// with section headers can tell (without them, any mapped byte may be in use). Such bytes
    /// are what an earlier relayout (patchelf's, in many manylinux wheels) leaves behind when it
    /// moves sections out of the first page.
    fn unused(&self, range: &Range<u64>) -> bool {
        let parsed = &self.parsed;
        if range.is_empty() {
            return true;
        }
        let header_size = if self.codec.is64 { 64 } else { 52 };
        let section_table = parsed.sections.len() as u64 * if self.codec.is64 { 64 } else { 40 };
        let Some(load) = parsed.segments.iter().find(|segment| {
            segment.p_type == PT_LOAD
                && segment.offset <= range.start
                && range.end <= segment.offset.saturating_add(segment.filesz)
        }) else {
            return false;
        };
        if range.start < header_size
            || range.end > self.bytes.len() as u64
            || !parsed.sections.iter().any(|section| section.index != 0)
            || overlaps(
                range,
                &(parsed.shoff..parsed.shoff.saturating_add(section_table)),
            )
        {
            return false;
        }
        let in_section = parsed.sections.iter().any(|section| {
            section.sh_type != SHT_NOBITS
                && section.size > 0
                && overlaps(range, &extent(section.offset, section.size))
        });
        let in_segment = parsed.segments.iter().any(|segment| {
            segment.p_type != PT_LOAD
                && segment.filesz > 0
                && overlaps(range, &extent(segment.offset, segment.filesz))
        });
        // Any dynamic value that falls in the bytes' addresses counts, pointer or not: a size that
        // happens to look like an address in there only costs moving the table instead.
        let start = load.vaddr.checked_add(range.start - load.offset);
        let addresses =
            start.and_then(|start| Some(start..start.checked_add(range.end - range.start)?));
        let pointed_at = match (&addresses, &parsed.dynamic) {
            (None, _) => true,
            (Some(addresses), Some(dynamic)) => dynamic
                .entries
                .iter()
                .any(|entry| addresses.contains(&entry.value)),
            (Some(_), None) => false,
        };
        !in_section && !in_segment && !pointed_at
    }

    /// Plans room for `extra` more program headers at the end of the table, in the `PT_LOAD` that
    /// maps it: `Some(blobs)` when the window is free once `blobs` (the interpreter and note segments,
    /// which only program headers and their own section headers point at) move to the new
    /// segment, or is [unused](Self::unused) already; `None` when the table has to move instead.
    fn phdr_room(&self, extra: u64) -> Option<Vec<Range<u64>>> {
        const PT_GNU_PROPERTY: u32 = 0x6474_e553;
        let codec = self.codec;
        let count = self.parsed.segments.len() as u64;
        let table_end = self.parsed.phoff + count * codec.phdr_size();
        let window = table_end..table_end + extra * codec.phdr_size();
        let in_load = self.parsed.segments.iter().any(|s| {
            s.p_type == PT_LOAD
                && s.offset <= self.parsed.phoff
                && window.end <= s.offset.saturating_add(s.filesz)
        });
        if !in_load {
            return None;
        }
        let movable = |p_type: u32| matches!(p_type, PT_INTERP | PT_NOTE | PT_GNU_PROPERTY);
        let span = |s: &Segment| s.offset..s.offset.saturating_add(s.filesz);
        let pointed = self.pointer_sections();
        let movable_section = |section: &crate::read::Section| {
            section.sh_type == goblin::elf::section_header::SHT_NOTE
                || section.name == b".interp"
                || pointed.contains(&section.index)
        };
        let section_span = |s: &crate::read::Section| s.offset..s.offset.saturating_add(s.size);
        // Blobs: unions of movable segments and sections, starting from those in the window.
        let mut blobs: Vec<Range<u64>> = Vec::new();
        for segment in &self.parsed.segments {
            if movable(segment.p_type) && segment.filesz > 0 && overlaps(&span(segment), &window) {
                blobs.push(span(segment));
            }
        }
        for section in &self.parsed.sections {
            if section.size > 0
                && section.sh_type != SHT_NOBITS
                && movable_section(section)
                && overlaps(&section_span(section), &window)
            {
                blobs.push(section_span(section));
            }
        }
        loop {
            let mut grown = false;
            for segment in self
                .parsed
                .segments
                .iter()
                .filter(|s| movable(s.p_type) && s.filesz > 0)
            {
                let range = span(segment);
                for blob in &mut blobs {
                    if overlaps(blob, &range) && (range.start < blob.start || range.end > blob.end)
                    {
                        blob.start = blob.start.min(range.start);
                        blob.end = blob.end.max(range.end);
                        grown = true;
                    }
                }
            }
            blobs.sort_by_key(|blob| blob.start);
            blobs.dedup_by(|next, previous| {
                if overlaps(previous, next) {
                    previous.end = previous.end.max(next.end);
                    true
                } else {
                    false
                }
            });
            if !grown {
                break;
            }
        }
        if blobs.iter().any(|blob| blob.end > self.bytes.len() as u64) {
            return None;
        }
        // The window must be covered by blobs, alignment padding and unused bytes.
        let free = |gap: Range<u64>| gap.end - gap.start < 8 || self.unused(&gap);
        let mut cursor = window.start;
        for blob in &blobs {
            if cursor >= window.end {
                break;
            }
            if blob.start < cursor || !free(cursor..blob.start.min(window.end)) {
                return None;
            }
            cursor = blob.end;
        }
        if cursor < window.end && !free(cursor..window.end) {
            return None;
        }
        let covered = |range: &Range<u64>| {
            blobs
                .iter()
                .any(|b| b.start <= range.start && range.end <= b.end)
        };
        // Nothing else may live in the window or in a blob.
        for segment in &self.parsed.segments {
            let range = span(segment);
            if segment.p_type == PT_LOAD || segment.p_type == PT_PHDR || segment.filesz == 0 {
                continue;
            }
            let touches = overlaps(&range, &window) || blobs.iter().any(|b| overlaps(b, &range));
            if touches && !(movable(segment.p_type) && covered(&range)) {
                return None;
            }
        }
        for section in &self.parsed.sections {
            if section.sh_type == SHT_NOBITS || section.size == 0 || section.index == 0 {
                continue;
            }
            let range = section.offset..section.offset.saturating_add(section.size);
            let touches = overlaps(&range, &window) || blobs.iter().any(|b| overlaps(b, &range));
            if touches && !(movable_section(section) && covered(&range)) {
                return None;
            }
        }
        Some(blobs)
    }

    fn relayout(
        &mut self,
        entries: &[Entry],
        grown_strings: &[u8],
        new_interp: Option<&Vec<u8>>,
        grow_dynamic: bool,
        page_size: u64,
        keep_old_sections: bool,
    ) -> Result<(u64, Vec<u8>)> {
        let codec = self.codec;
        let file_len = self.bytes.len() as u64;
        let loads: Vec<Segment> = self
            .parsed
            .segments
            .iter()
            .filter(|s| s.p_type == PT_LOAD)
            .copied()
            .collect();
        let Some(first_load) = loads.first().copied() else {
            return Err(Error::Missing {
                operation: "add a segment",
                missing: "PT_LOAD segment",
            });
        };
        // A section header table that ends the file is cut off here and written again after the
        // new segment, so that it still ends the file (as tools such as patchelf's `pad-to-page`
        // test helper expect). Everything before it stays where it is.
        let section_table = self.trailing_section_table();
        let cut = section_table.as_ref().map_or(file_len, |table| table.start);
        // A last PT_LOAD that ends the file (the one an earlier relayout added, ours or
        // patchelf's, which leaves one byte of padding after it) simply grows: no new program
        // header, so repeated edits do not pile up segments, and the segment keeps a section in
        // it. A segment whose only section moved out would be left with none, and binutils
        // `strip` turns such a segment into an empty one at an offset that is not congruent to
        // its address (`ELF load command address/offset not page-aligned` when loading).
        let mut segments = self.parsed.segments.clone();
        let extend_index = segments
            .iter()
            .rposition(|s| s.p_type == PT_LOAD)
            .filter(|&index| {
                let last = &segments[index];
                let end = last.offset.saturating_add(last.filesz);
                end <= cut
                    && cut - end < 16
                    && self.unclaimed(&(end..cut))
                    && last.filesz == last.memsz
                    && last.flags & goblin::elf::program_header::PF_X == 0
                    && loads
                        .iter()
                        .all(|s| s.vaddr.saturating_add(s.memsz) <= last.vaddr + last.memsz)
            });
        // A PT_LOAD that maps nothing but what moves now would be left holding no section, which
        // `strip` mangles as said above: it becomes a PT_NULL (whose slot the new LOAD can take).
        for index in self.orphaned_loads(grown_strings, new_interp.is_some(), grow_dynamic) {
            if Some(index) != extend_index {
                segments[index] = Segment {
                    p_type: PT_NULL,
                    flags: 0,
                    offset: 0,
                    vaddr: 0,
                    paddr: 0,
                    filesz: 0,
                    memsz: 0,
                    align: 0,
                };
            }
        }
        // Otherwise: drop one PT_NULL if any, insert a new LOAD after the last LOAD.
        if extend_index.is_none()
            && let Some(null) = segments.iter().position(|s| s.p_type == PT_NULL)
        {
            segments.remove(null);
        }
        if let Some(stack) = self.new_stack {
            segments.push(stack);
        }
        // The resolution cache note's PT_NOTE goes last; placed below.
        let new_note = self.new_note.clone();
        if new_note.is_some() {
            segments.push(Segment {
                p_type: PT_NOTE,
                flags: PF_R,
                offset: 0,
                vaddr: 0,
                paddr: 0,
                filesz: 0,
                memsz: 0,
                align: 4,
            });
        }
        let last_load = segments
            .iter()
            .rposition(|s| s.p_type == PT_LOAD)
            .map_or(0, |index| index + 1);
        let new_count = segments.len() as u64 + u64::from(extend_index.is_none());
        let old_count = self.parsed.segments.len() as u64;
        let room = if new_count > old_count + 2 {
            // More than two headers more (a new LOAD and a resolution cache note's PT_NOTE, say):
            // the table moves.
            None
        } else if new_count > old_count {
            self.phdr_room(new_count - old_count)
        } else {
            Some(Vec::new())
        };
        let move_phdrs = room.is_none();
        let blobs = room.unwrap_or_default();
        // The interpreter blob is not copied when the interpreter changes anyway.
        let interp_range = self
            .segment(PT_INTERP)
            .map(|s| s.offset..s.offset.saturating_add(s.filesz));
        let blobs: Vec<Range<u64>> = blobs
            .into_iter()
            .filter(|blob| new_interp.is_none() || Some(blob) != interp_range.as_ref())
            .collect();
        let dynamic_slots = entries.len() as u64 + 1 + 4;

        // Contents of the new segment, relative to its start.
        let mut cursor: u64 = 0;
        let phdr_at = move_phdrs.then(|| {
            let at = cursor;
            cursor += new_count * codec.phdr_size();
            at
        });
        let dynamic_at = grow_dynamic.then(|| {
            cursor = cursor.next_multiple_of(codec.word_size());
            let at = cursor;
            cursor += dynamic_slots * codec.dyn_size();
            at
        });
        let mut blob_at = Vec::with_capacity(blobs.len());
        for blob in &blobs {
            cursor = cursor.next_multiple_of(8);
            blob_at.push(cursor);
            cursor += blob.end - blob.start;
        }
        let interp_at = new_interp.as_ref().map(|interp| {
            let at = cursor;
            cursor += interp.len() as u64;
            at
        });
        let strings_at = (!grown_strings.is_empty()).then(|| {
            let at = cursor;
            cursor += grown_strings.len() as u64;
            at
        });
        let note_at = new_note.as_ref().map(|note| {
            cursor = cursor.next_multiple_of(8);
            let at = cursor;
            cursor += note.len() as u64;
            at
        });
        let size = cursor;

        // Where it goes: past every byte of the file and every mapped page.
        let overflow = || Error::malformed("segment addresses overflow", 0);
        let top = loads
            .iter()
            .map(|s| s.vaddr.checked_add(s.memsz))
            .try_fold(0u64, |acc, end| end.map(|end| acc.max(end)))
            .ok_or_else(overflow)?;
        let top = align_up(top, page_size).ok_or_else(overflow)?;
        let start = align_up(cut, 16).ok_or_else(overflow)?;
        let delta = first_load.vaddr.wrapping_sub(first_load.offset);
        // When the program headers move, keep (vaddr - offset) equal to the first LOAD's, so the
        // kernel's AT_PHDR (first LOAD's bias + e_phoff on kernels before 5.18) stays right.
        let (offset, vaddr) = if let Some(index) = extend_index {
            let last = segments[index];
            let offset = align_up(cut, 8).ok_or_else(overflow)?;
            (
                offset,
                last.vaddr
                    .checked_add(offset - last.offset)
                    .ok_or_else(overflow)?,
            )
        } else if move_phdrs
            && delta.is_multiple_of(page_size)
            && first_load.vaddr >= first_load.offset
        {
            let candidate = start.checked_add(delta).ok_or_else(overflow)?;
            if candidate - candidate % page_size >= top {
                (start, candidate)
            } else {
                let offset = (top - delta)
                    .checked_add(start % page_size)
                    .ok_or_else(overflow)?;
                (offset, offset.checked_add(delta).ok_or_else(overflow)?)
            }
        } else {
            (
                start,
                top.checked_add(start % page_size).ok_or_else(overflow)?,
            )
        };
        // Padding between the old end of the file and the new segment stays small; anything else
        // means the segment table lies about addresses.
        if offset.saturating_sub(cut) > MAX_PADDING {
            return Err(Error::malformed("segment addresses", offset));
        }
        if vaddr.checked_add(size).is_none() || offset.checked_add(size).is_none() {
            return Err(overflow());
        }
        let flags = if grow_dynamic { PF_R | PF_W } else { PF_R };
        let new_load = Segment {
            p_type: PT_LOAD,
            flags,
            offset,
            vaddr,
            paddr: vaddr,
            filesz: size,
            memsz: size,
            align: page_size,
        };
        if let Some(index) = extend_index {
            let last = &mut segments[index];
            last.filesz = offset + size - last.offset;
            last.memsz = last.filesz;
            last.flags |= flags;
        } else {
            segments.insert(last_load, new_load);
        }

        let mut blob = vec![0u8; usize::try_from(size).map_err(|_| overflow())?];
        let mut put = |at: u64, data: &[u8]| {
            let at = at as usize;
            blob[at..at + data.len()].copy_from_slice(data);
        };

        // Interpreter, notes and hash/symbol/version tables moved out of the way of the program
        // header table; copied with the edits made so far (symbol versions, vn_file).
        // (Only the moved ranges are copied, never the whole file.)
        let pieces: Vec<Vec<u8>> = blobs
            .iter()
            .map(|blob| {
                let len = blob.end - blob.start;
                let range = file_range(self.bytes, blob.start, len)
                    .ok_or_else(|| Error::malformed("note or interpreter segment", blob.start))?;
                let mut piece = self.bytes[range].to_vec();
                for write in &self.writes {
                    write.apply_within(&mut piece, blob.start);
                }
                Ok(piece)
            })
            .collect::<Result<_>>()?;
        let mut address_moves: Vec<(Range<u64>, u64)> = Vec::new();
        for ((blob, &at), piece) in blobs.iter().zip(&blob_at).zip(&pieces) {
            put(at, piece);
            if let Some(old_vaddr) = self.vaddr_of(blob.start)
                && let Some(old_end) = old_vaddr.checked_add(blob.end - blob.start)
            {
                address_moves.push((old_vaddr..old_end, vaddr + at));
            }
            let inside = |start: u64, size: u64| {
                blob.start <= start && start.checked_add(size).is_some_and(|end| end <= blob.end)
            };
            for segment in segments
                .iter_mut()
                .filter(|s| s.p_type != PT_LOAD && s.filesz > 0 && inside(s.offset, s.filesz))
            {
                let shift = segment.offset - blob.start;
                segment.offset = offset + at + shift;
                segment.vaddr = vaddr + at + shift;
                segment.paddr = vaddr + at + shift;
            }
            let moved: Vec<(usize, u64, u64)> = self
                .parsed
                .sections
                .iter()
                .filter(|s| s.index != 0 && s.size > 0 && inside(s.offset, s.size))
                .map(|s| (s.index, s.offset - blob.start, s.size))
                .collect();
            for (index, shift, size) in moved {
                self.write_section(index, vaddr + at + shift, offset + at + shift, size);
            }
        }
        // Interpreter.
        if let (Some(at), Some(interp)) = (interp_at, new_interp) {
            put(at, interp);
            if let Some(old) = self.segment(PT_INTERP).copied() {
                // Clear the old string so no old store path survives.
                let zeros = vec![0u8; usize::try_from(old.filesz).unwrap_or(0)];
                push_diff(&mut self.writes, self.bytes, old.offset, &zeros);
                if let Some(section) = self.parsed.section_at(old.offset, None).map(|s| s.index) {
                    self.write_section(section, vaddr + at, offset + at, interp.len() as u64);
                }
            }
            for segment in segments.iter_mut().filter(|s| s.p_type == PT_INTERP) {
                segment.offset = offset + at;
                segment.vaddr = vaddr + at;
                segment.paddr = vaddr + at;
                segment.filesz = interp.len() as u64;
                segment.memsz = interp.len() as u64;
                segment.align = 1;
            }
        }
        // String table.
        let strtab = strings_at.map(|at| (vaddr + at, grown_strings.len() as u64));
        if let Some(at) = strings_at {
            put(at, grown_strings);
            let old_offset = self.parsed.dynstr.as_ref().map_or(0, |t| t.offset);
            // The old table is no longer referenced (DT_STRTAB and its section header move):
            // cleared, as patchelf clobbers moved sections, so no old string or store path
            // survives in it. Kept when asked (`--no-clobber-old-sections`), as patchelf keeps
            // it: with the erasures made before the move (an old run path stays `X`), which are
            // the start of the new table.
            if let Some(table) = &self.parsed.dynstr {
                let old = if keep_old_sections {
                    grown_strings
                        .get(..table.bytes.len())
                        .map_or_else(|| vec![0u8; table.bytes.len()], <[u8]>::to_vec)
                } else {
                    vec![0u8; table.bytes.len()]
                };
                push_diff(&mut self.writes, self.bytes, table.offset, &old);
            }
            if let Some(section) = self
                .parsed
                .section_at(old_offset, Some(SHT_STRTAB))
                .map(|s| s.index)
            {
                self.write_section(section, vaddr + at, offset + at, grown_strings.len() as u64);
            }
        }
        // Resolution cache note: its PT_NOTE is the last one (pushed above).
        if let (Some(at), Some(note)) = (note_at, &new_note) {
            put(at, note);
            if let Some(segment) = segments.iter_mut().rev().find(|s| s.p_type == PT_NOTE) {
                segment.offset = offset + at;
                segment.vaddr = vaddr + at;
                segment.paddr = vaddr + at;
                segment.filesz = note.len() as u64;
                segment.memsz = note.len() as u64;
            }
        }
        // Dynamic section.
        let mut values = Self::final_entries(entries, strtab);
        for entry in values
            .iter_mut()
            .filter(|e| MOVABLE_POINTER_TAGS.contains(&e.tag))
        {
            if let Some((old, new)) = address_moves
                .iter()
                .find(|(old, _)| old.contains(&entry.value))
            {
                entry.value = new + (entry.value - old.start);
            }
        }
        if let Some(at) = dynamic_at {
            let encoded = self.encode_dynamic(&values, dynamic_slots);
            put(at, &encoded);
            let bytes = encoded.len() as u64;
            for segment in segments.iter_mut().filter(|s| s.p_type == PT_DYNAMIC) {
                segment.offset = offset + at;
                segment.vaddr = vaddr + at;
                segment.paddr = vaddr + at;
                segment.filesz = bytes;
                segment.memsz = bytes;
            }
            if let Some(section) = self.parsed.dynamic_section().map(|s| s.index) {
                self.write_section(section, vaddr + at, offset + at, bytes);
            }
        } else if let Some(dynamic) = &self.parsed.dynamic {
            let encoded = self.encode_dynamic(&values, dynamic.capacity);
            let at = dynamic.offset;
            push_diff(&mut self.writes, self.bytes, at, &encoded);
        }
        // Program headers.
        let table_bytes = new_count * codec.phdr_size();
        if let Some(at) = phdr_at {
            for segment in segments.iter_mut().filter(|s| s.p_type == PT_PHDR) {
                segment.offset = offset + at;
                segment.vaddr = vaddr + at;
                segment.paddr = vaddr + at;
                segment.filesz = table_bytes;
                segment.memsz = table_bytes;
            }
        } else {
            for segment in segments.iter_mut().filter(|s| s.p_type == PT_PHDR) {
                segment.filesz = table_bytes;
                segment.memsz = table_bytes;
            }
        }
        let table: Vec<u8> = segments
            .iter()
            .flat_map(|segment| encode_segment(codec, segment))
            .collect();
        let table_offset = if let Some(at) = phdr_at {
            put(at, &table);
            offset + at
        } else {
            push_diff(&mut self.writes, self.bytes, self.parsed.phoff, &table);
            self.parsed.phoff
        };
        let (phoff_at, phnum_at) = if codec.is64 { (32, 56) } else { (28, 44) };
        let encoded = codec.encode_word(table_offset);
        push_diff(&mut self.writes, self.bytes, phoff_at, &encoded);
        let phnum =
            u16::try_from(new_count).map_err(|_| Error::malformed("program header count", 0))?;
        let encoded = codec.encode_u16(phnum);
        push_diff(&mut self.writes, self.bytes, phnum_at, &encoded);

        // The section header table moves behind the new segment, with the edits made to it,
        // when it ended the file or gets a new section header (the note's, whose name is added
        // to a copy of the section name table, which goes there too).
        let mut tail = blob;
        let note_section = match (note_at, &new_note) {
            (Some(at), Some(note)) => Some((vaddr + at, offset + at, note.len() as u64)),
            _ => None,
        };
        let moved_table = match (&section_table, note_section) {
            (Some(table), _) => Some(table.clone()),
            (None, Some(_)) => Some(self.section_table_range().ok_or(Error::Missing {
                operation: "add a section",
                missing: "section header table",
            })?),
            (None, None) => None,
        };
        if let Some(table) = moved_table {
            let range = file_range(self.bytes, table.start, table.end - table.start)
                .ok_or_else(|| Error::malformed("section header table", table.start))?;
            let mut headers = self.bytes[range].to_vec();
            for write in &self.writes {
                write.apply_within(&mut headers, table.start);
            }
            let entry_size = self.section_entry_size();
            let mut count = self
                .section_count
                .unwrap_or(headers.len() as u64 / entry_size.max(1));
            headers.truncate(usize::try_from(count * entry_size).map_err(|_| overflow())?);
            let mut at = align_up(size, 8).ok_or_else(overflow)?;
            if let Some((address, note_offset, note_size)) = note_section {
                let (names, name) = self.grown_section_names(crate::ldcache::SECTION_NAME)?;
                let names_at = at;
                at = align_up(at + names.len() as u64, 8).ok_or_else(overflow)?;
                tail.resize(usize::try_from(names_at).map_err(|_| overflow())?, 0);
                tail.extend_from_slice(&names);
                // The name table's header, in the copy: offset and size.
                let (off_at, size_at) = if codec.is64 { (24, 32) } else { (16, 20) };
                let base = usize::try_from(self.section_name_index() * entry_size)
                    .map_err(|_| overflow())?;
                for (field, value) in [(off_at, offset + names_at), (size_at, names.len() as u64)] {
                    let encoded = codec.encode_word(value);
                    let slot = headers
                        .get_mut(base + field..base + field + encoded.len())
                        .ok_or_else(|| Error::malformed("section name table header", 0))?;
                    slot.copy_from_slice(&encoded);
                }
                headers.extend(encode_section_header(
                    codec,
                    &SectionHeader {
                        name,
                        sh_type: goblin::elf::section_header::SHT_NOTE,
                        flags: u64::from(goblin::elf::section_header::SHF_ALLOC),
                        address,
                        offset: note_offset,
                        size: note_size,
                        align: 4,
                    },
                ));
                count += 1;
            }
            tail.resize(usize::try_from(at).map_err(|_| overflow())?, 0);
            tail.extend_from_slice(&headers);
            let (shoff_at, shnum_at) = if codec.is64 { (40, 60) } else { (32, 48) };
            let encoded = codec.encode_word(offset + at);
            push_diff(&mut self.writes, self.bytes, shoff_at, &encoded);
            let count = u16::try_from(count).map_err(|_| Error::malformed("section count", 0))?;
            push_diff(
                &mut self.writes,
                self.bytes,
                shnum_at,
                &codec.encode_u16(count),
            );
            // Old table bytes left in the file are cleared last, after the writes into them, so
            // that no stale copy is left behind.
            let stale = if section_table.is_some() {
                cut..offset.min(file_len)
            } else {
                table.start..table.end.min(file_len)
            };
            if stale.end > stale.start {
                let zeros = usize::try_from(stale.end - stale.start).map_err(|_| overflow())?;
                self.writes.push(Write {
                    offset: stale.start,
                    bytes: vec![0; zeros],
                });
            }
        }

        // The new file is the original bytes with `self.writes`, cut or padded to `offset`, then
        // `tail` (the new segment and, when it ended the file, the section header table);
        // `Layout::build` or a streaming writer puts it together.
        Ok((offset, tail))
    }

    /// Indexes of the `PT_LOAD`s (never the first) that map sections, all of which move to the
    /// new segment in this relayout (the dynamic string table when it grows, `.dynamic` when it
    /// grows, `.interp` when it is replaced), and nothing else: no other segment, no program
    /// header table and no address a dynamic entry holds, other than those that move. Earlier
    /// relayouts (patchelf's in manylinux wheels) leave such segments, holding only `.dynstr`.
    fn orphaned_loads(
        &self,
        grown_strings: &[u8],
        new_interp: bool,
        grow_dynamic: bool,
    ) -> Vec<usize> {
        use goblin::elf::section_header::SHF_ALLOC;
        let parsed = &self.parsed;
        let mut moving: Vec<usize> = Vec::new();
        let mut moving_tags: Vec<u64> = Vec::new();
        if !grown_strings.is_empty()
            && let Some(table) = &parsed.dynstr
            && let Some(section) = parsed.section_at(table.offset, Some(SHT_STRTAB))
        {
            moving.push(section.index);
            moving_tags.push(DT_STRTAB);
        }
        if grow_dynamic && let Some(section) = parsed.dynamic_section() {
            moving.push(section.index);
        }
        if new_interp
            && let Some(interp) = self.segment(PT_INTERP)
            && let Some(section) = parsed.section_at(interp.offset, None)
        {
            moving.push(section.index);
        }
        let moving_segment = |p_type: u32| {
            (p_type == PT_DYNAMIC && grow_dynamic) || (p_type == PT_INTERP && new_interp)
        };
        let phdrs = extent(
            parsed.phoff,
            parsed.segments.len() as u64 * self.codec.phdr_size(),
        );
        let first_load = parsed.segments.iter().position(|s| s.p_type == PT_LOAD);
        let entry = self.codec.word(self.bytes, 24);
        parsed
            .segments
            .iter()
            .enumerate()
            .filter(|&(index, load)| {
                if load.p_type != PT_LOAD || Some(index) == first_load || load.filesz == 0 {
                    return false;
                }
                let file = extent(load.offset, load.filesz);
                let memory = extent(load.vaddr, load.memsz);
                let inside: Vec<&crate::read::Section> = parsed
                    .sections
                    .iter()
                    .filter(|section| {
                        section.index != 0
                            && section.size > 0
                            && ((section.flags & u64::from(SHF_ALLOC) != 0
                                && overlaps(&memory, &extent(section.addr, section.size)))
                                || (section.sh_type != SHT_NOBITS
                                    && overlaps(&file, &extent(section.offset, section.size))))
                    })
                    .collect();
                let others = parsed.segments.iter().any(|segment| {
                    segment.p_type != PT_LOAD
                        && !moving_segment(segment.p_type)
                        && (segment.filesz > 0 || segment.memsz > 0)
                        && (overlaps(&file, &extent(segment.offset, segment.filesz))
                            || overlaps(&memory, &extent(segment.vaddr, segment.memsz)))
                });
                let pointed_at = parsed.dynamic.as_ref().is_some_and(|dynamic| {
                    dynamic.entries.iter().any(|entry| {
                        !moving_tags.contains(&entry.tag) && memory.contains(&entry.value)
                    })
                });
                !inside.is_empty()
                    && inside.iter().all(|section| moving.contains(&section.index))
                    && !others
                    && !pointed_at
                    && !overlaps(&file, &phdrs)
                    && !entry.is_some_and(|entry| memory.contains(&entry))
            })
            .map(|(index, _)| index)
            .collect()
    }

    /// `e_shentsize`.
    fn section_entry_size(&self) -> u64 {
        let at = if self.codec.is64 { 58 } else { 46 };
        u64::from(self.codec.u16(self.bytes, at).unwrap_or(0))
    }

    /// `e_shstrndx`.
    fn section_name_index(&self) -> u64 {
        let at = if self.codec.is64 { 62 } else { 50 };
        u64::from(self.codec.u16(self.bytes, at).unwrap_or(0))
    }

    /// The section header table's bytes, when there is one of the expected entry size.
    fn section_table_range(&self) -> Option<Range<u64>> {
        let parsed = &self.parsed;
        let codec = self.codec;
        let count_at = if codec.is64 { 60 } else { 48 };
        let entsize = self.section_entry_size();
        let count = u64::from(codec.u16(self.bytes, count_at)?);
        if parsed.shoff == 0 || count == 0 || entsize != if codec.is64 { 64 } else { 40 } {
            return None;
        }
        let table = parsed.shoff..parsed.shoff.checked_add(count.checked_mul(entsize)?)?;
        (table.end <= self.bytes.len() as u64).then_some(table)
    }

    /// A copy of the section name table with `name` appended, and the new name's offset in it.
    fn grown_section_names(&self, name: &[u8]) -> Result<(Vec<u8>, u32)> {
        let index = usize::try_from(self.section_name_index()).unwrap_or(usize::MAX);
        let section = self
            .parsed
            .sections
            .get(index)
            .filter(|section| index != 0 && section.sh_type == SHT_STRTAB)
            .ok_or(Error::Missing {
                operation: "add a section",
                missing: "section name table",
            })?;
        let range = file_range(self.bytes, section.offset, section.size)
            .ok_or_else(|| Error::malformed("section name table", section.offset))?;
        let mut names = self.bytes[range].to_vec();
        let at =
            u32::try_from(names.len()).map_err(|_| Error::malformed("section name table", 0))?;
        names.extend_from_slice(name);
        names.push(0);
        Ok((names, at))
    }

    /// The section header table's bytes when it ends the file and nothing else lies in them.
    fn trailing_section_table(&self) -> Option<Range<u64>> {
        let parsed = &self.parsed;
        let codec = self.codec;
        let table = self.section_table_range()?;
        let header = if codec.is64 { 64 } else { 52 };
        let ends_file = table.end == self.bytes.len() as u64 && table.start >= header;
        let phdrs = extent(
            parsed.phoff,
            parsed.segments.len() as u64 * codec.phdr_size(),
        );
        (ends_file && !overlaps(&table, &phdrs) && self.unclaimed(&table)).then_some(table)
    }

    /// Whether no section's bytes and no segment lie in the file bytes `range`.
    fn unclaimed(&self, range: &Range<u64>) -> bool {
        range.is_empty()
            || (!self.parsed.sections.iter().any(|section| {
                section.index != 0
                    && section.sh_type != SHT_NOBITS
                    && section.size > 0
                    && overlaps(range, &extent(section.offset, section.size))
            }) && !self.parsed.segments.iter().any(|segment| {
                segment.filesz > 0 && overlaps(range, &extent(segment.offset, segment.filesz))
            }))
    }

    /// Re-parses a relayout and checks it says what the edits asked for.
    fn verify(new_bytes: &[u8], entries: &[Entry], edits: &ElfEdits) -> Result<()> {
        let info = ElfInfo::parse(new_bytes).map_err(|_| Error::Verification {
            what: "the result does not parse",
        })?;
        let texts = |tag: u64| -> Vec<Vec<u8>> {
            entries
                .iter()
                .filter(|e| e.tag == tag)
                .filter_map(|e| e.text().map(<[u8]>::to_vec))
                .collect()
        };
        if info.needed != texts(DT_NEEDED) {
            return Err(Error::Verification { what: "DT_NEEDED" });
        }
        if info.soname != texts(DT_SONAME).into_iter().next() {
            return Err(Error::Verification { what: "DT_SONAME" });
        }
        if info.runpath != texts(DT_RUNPATH).into_iter().next()
            || info.rpath != texts(DT_RPATH).into_iter().next()
        {
            return Err(Error::Verification { what: "run path" });
        }
        if let Some(interp) = &edits.interpreter
            && info.interpreter.as_ref() != Some(interp)
        {
            return Err(Error::Verification {
                what: "interpreter",
            });
        }
        if edits.resolution_cache.is_some() && info.resolution_cache != edits.resolution_cache {
            return Err(Error::Verification {
                what: "resolution cache note",
            });
        }
        Ok(())
    }
}
