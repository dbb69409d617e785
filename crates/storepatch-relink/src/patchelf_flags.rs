//! autoPatchelfHook's `patchelfFlags`: extra `patchelf` options the hook appends to every
//! `patchelf` call it makes (`--extra-args` of `auto-patchelf.py`).
//!
//! Those calls set the interpreter of dynamic executables and the run path of files that get
//! one, so only options that modify such a call are meaningful here:
//!
//! | flag | meaning |
//! |---|---|
//! | `--force-rpath` | write `DT_RPATH` instead of `DT_RUNPATH` |
//! | `--no-default-lib` | set `DF_1_NODEFLIB`: the loader skips its default directories |
//! | `--page-size N` | alignment of a segment added when the headers grow |
//! | `--debug` | accepted; more output is `-v` |
//!
//! Anything else (an action such as `--set-soname`, or an unknown flag) is an error naming it,
//! because repeating it on every call would not mean what the package author expects.
use std::ffi::OsString;

use storepatch_elf::Options;

/// The accepted subset of patchelf options, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchelfFlags {
    /// `--force-rpath`.
    pub force_rpath: bool,
    /// `--no-default-lib`.
    pub no_default_lib: bool,
    /// `--page-size N`.
    pub page_size: Option<u64>,
}

/// A `patchelfFlags` entry that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "patchelf flag {flag}: {reason} (accepted: --force-rpath, --no-default-lib, --page-size N, --debug)"
)]
pub struct PatchelfFlagError {
    /// The flag as given.
    pub flag: String,
    /// Why it is refused.
    pub reason: &'static str,
}

impl PatchelfFlags {
    /// Parses flags as `auto-patchelf.py --extra-args` receives them. Empty strings (from an
    /// empty shell array) are skipped.
    ///
    /// # Errors
    ///
    /// A flag outside the accepted subset, or `--page-size` without a valid number.
    pub fn parse(args: &[OsString]) -> Result<Self, PatchelfFlagError> {
        let mut flags = Self::default();
        let mut args = args.iter().map(|arg| arg.to_string_lossy().into_owned());
        while let Some(arg) = args.next() {
            let refuse = |reason| PatchelfFlagError {
                flag: arg.clone(),
                reason,
            };
            match arg.as_str() {
                "" | "--debug" => {}
                "--force-rpath" => flags.force_rpath = true,
                "--no-default-lib" => flags.no_default_lib = true,
                "--page-size" => {
                    let value = args
                        .next()
                        .ok_or_else(|| refuse("needs a value (a power of two)"))?;
                    let size = parse_number(&value)
                        .filter(|size| size.is_power_of_two())
                        .ok_or_else(|| refuse("needs a power of two"))?;
                    flags.page_size = Some(size);
                }
                other if other.starts_with("--page-size=") => {
                    let size = parse_number(&other["--page-size=".len()..])
                        .filter(|size| size.is_power_of_two())
                        .ok_or_else(|| refuse("needs a power of two"))?;
                    flags.page_size = Some(size);
                }
                other if other.starts_with("--print-") => {
                    return Err(refuse("prints instead of editing"));
                }
                other if other.starts_with('-') => {
                    return Err(refuse(
                        "is not an option relink can add to setting an interpreter or run path",
                    ));
                }
                _ => return Err(refuse("is not an option (file names come from --paths)")),
            }
        }
        Ok(flags)
    }

    /// Whether the flags add edits to a file patchelf is called on.
    pub fn has_edits(&self) -> bool {
        self.force_rpath || self.no_default_lib
    }

    /// The layout options for the ELF engine.
    pub fn options(&self) -> Options {
        Options {
            page_size: self.page_size,
            ..Options::default()
        }
    }
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<PatchelfFlags, PatchelfFlagError> {
        PatchelfFlags::parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn accepts_the_subset_that_modifies_a_call() {
        assert_eq!(
            parse(&["", "--force-rpath", "--page-size", "65536", "--debug"]).unwrap(),
            PatchelfFlags {
                force_rpath: true,
                no_default_lib: false,
                page_size: Some(65536),
            }
        );
        assert_eq!(
            parse(&["--no-default-lib", "--page-size=0x1000"]).unwrap(),
            PatchelfFlags {
                force_rpath: false,
                no_default_lib: true,
                page_size: Some(4096),
            }
        );
        assert_eq!(parse(&[]).unwrap(), PatchelfFlags::default());
    }

    #[test]
    fn refuses_the_rest_by_name() {
        let error = parse(&["--set-soname", "libx.so"]).unwrap_err();
        assert_eq!(error.flag, "--set-soname");
        assert!(
            error.to_string().contains("accepted: --force-rpath"),
            "{error}"
        );
        assert_eq!(parse(&["--print-rpath"]).unwrap_err().flag, "--print-rpath");
        assert_eq!(parse(&["--page-size"]).unwrap_err().flag, "--page-size");
        assert_eq!(
            parse(&["--page-size", "3000"]).unwrap_err().flag,
            "--page-size"
        );
        assert_eq!(parse(&["a.out"]).unwrap_err().flag, "a.out");
    }
}
