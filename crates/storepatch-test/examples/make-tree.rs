//! Generates a benchmark tree with `storepatch_test::venv::generate_big`.
//!
//! ```text
//! cargo run -p storepatch-test --example make-tree -- --out DIR --store-dir DIR [--size-mb 500]
//!     [--files 30000] [--copies 8] [--referencing-fraction 0.1] [--seed 0]
//! ```
//!
//! Prints a `key=value` summary on stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use storepatch_test::venv::{BigTreeParams, generate_big};

#[expect(clippy::print_stdout, reason = "the summary is this tool's output")]
fn main() -> Result<()> {
    let mut out: Option<PathBuf> = None;
    let mut store_dir: Option<PathBuf> = None;
    let mut params = BigTreeParams::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => out = Some(value()?.into()),
            "--store-dir" => store_dir = Some(value()?.into()),
            "--size-mb" => params.total_bytes = value()?.parse::<u64>()? * 1024 * 1024,
            "--files" => params.files = value()?.parse()?,
            "--copies" => params.copies = value()?.parse()?,
            "--referencing-fraction" => params.referencing_fraction = value()?.parse()?,
            "--seed" => params.seed = value()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "usage: make-tree --out DIR --store-dir DIR [--size-mb N] [--files N] \
                     [--copies N] [--referencing-fraction F] [--seed N]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let out = out.context("--out is required")?;
    let store_dir = store_dir.context("--store-dir is required")?;
    let started = Instant::now();
    let summary = generate_big(&out, &store_dir, &params)?;
    println!("root={}", out.display());
    println!("store_dir={}", store_dir.display());
    println!("files={}", summary.files);
    println!("bytes={}", summary.bytes);
    println!("referencing_files={}", summary.referencing_files);
    println!("references_written={}", summary.references_written);
    println!("bare_hashes_written={}", summary.bare_hashes_written);
    println!("store_paths={}", summary.store_paths.len());
    println!(
        "library_path={}",
        summary.fixture.library_path().to_string_lossy()
    );
    println!("seconds={:.2}", started.elapsed().as_secs_f64());
    Ok(())
}
