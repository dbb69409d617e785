//! Resolves the NEEDED libraries of ELF files against library paths and plans their run paths, the way autoPatchelfHook does.
#![deny(missing_docs)]
