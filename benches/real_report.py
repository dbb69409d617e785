#!/usr/bin/env python3
"""Turns the results of benches/real.sh into a table of ratios, summary.json and README.md.

usage: real_report.py RESULTS_DIR

Reads every hyperfine export (`<location>-<group>.json`, `cliff.json`), `<location>-memory.tsv`,
`context.env` and `corpus.json` in RESULTS_DIR, prints the ratios and writes summary.json and
README.md there.
"""

import datetime
import json
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

from report import read_context, seconds, version

SCAN = "storepatch scan --quiet"
SCAN_JSON = "storepatch scan --json"
SCAN_NO_MMAP = "storepatch scan --quiet --no-mmap"
RG = "rg -a -o PATTERN | sort -u"
READ_FLOOR = "read floor: rg -c (a literal that occurs nowhere)"
SCRUB = "storepatch scrub"
REWRITE_FLOOR = "rewrite floor: temp file + rename of each changed file"
BEST = "best shell: rg -l | sed -i -e ... (one -e per hash)"
OLD_PASS = "remove-references-to: one sed -i pass over every file"
SCRUB_BESIDE = "storepatch scrub (beside restore)"
RESTORE = "storepatch restore"


def list_floor(size):
    """The name of the relink group's list floor for the corpus of SIZE (base, x5)."""
    return f"list floor ({size}): rg --files (lists every file, opens none)"


def load(results):
    """{(file stem, command): {median, min, max, stddev, runs, user, system}}."""
    commands = {}
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "results" not in data:
            continue
        for result in data["results"]:
            times = result["times"]
            commands[(path.stem, result["command"])] = {
                "median": statistics.median(times),
                "min": min(times),
                "max": max(times),
                "stddev": statistics.stdev(times) if len(times) > 1 else 0.0,
                "runs": len(times),
                "user": result.get("user"),
                "system": result.get("system"),
            }
    return commands


def main():
    results = Path(sys.argv[1])
    context = read_context(results / "context.env")
    corpus = json.loads((results / "corpus.json").read_text())
    commands = load(results)
    locations = [loc for loc in context["where"].split(",") if (results / f"{loc}-scan.json").exists()]
    references = int(context["reference_count"])

    def median(stem, name):
        entry = commands.get((stem, name))
        return entry["median"] if entry else None

    def cpu_time(stem, name):
        """User + system time, hyperfine's means; None where either is missing."""
        entry = commands.get((stem, name))
        if not entry or entry["user"] is None or entry["system"] is None:
            return None
        return entry["user"] + entry["system"]

    rows = []  # (location, comparison, ratio, target text, met or None)

    def ratio(loc, label, numerator, denominator, target=None, at_least=True):
        if numerator is None or denominator is None or denominator == 0:
            return
        value = numerator / denominator
        met = None
        if target is not None:
            met = value >= target if at_least else value <= target
        target_text = "" if target is None else (f"≥ {target:g}×" if at_least else f"≤ {target:g}×")
        rows.append((loc, label, value, target_text, met))

    for loc in locations:
        scan = median(f"{loc}-scan", SCAN)
        rg = median(f"{loc}-scan", RG)
        floor = median(f"{loc}-scan", READ_FLOOR)
        ratio(loc, "ripgrep 15 `rg -a -o | sort -u` / scan (scan at least as fast)", rg, scan, 1.0)
        ratio(loc, "scan / read floor", scan, floor, 1.2, at_least=False)
        ratio(loc, "scan --json / scan", median(f"{loc}-scan", SCAN_JSON), scan, 1.1, at_least=False)
        ratio(loc, "ripgrep 15 / scan --no-mmap", rg, median(f"{loc}-scan", SCAN_NO_MMAP))
        scrub = median(f"{loc}-scrub", SCRUB)
        rewrite = median(f"{loc}-scrub", REWRITE_FLOOR)
        if floor is not None and rewrite is not None:
            ratio(loc, "scrub / (read floor + rewrite floor)", scrub, floor + rewrite, 1.2,
                  at_least=False)
        ratio(loc, "best shell pipeline / scrub", median(f"{loc}-scrub", BEST), scrub)
        old_pass = median(f"{loc}-old-pass", OLD_PASS)
        if old_pass is not None and rg is not None:
            ratio(loc, f"remove-references-to loop ({references} passes, extrapolated) / scrub",
                  rg + references * old_pass, scrub)
        ratio(loc, "restore / scrub", median(f"{loc}-restore", RESTORE),
              median(f"{loc}-restore", SCRUB_BESIDE), 1.2, at_least=False)
        for size in ("base", "x5"):
            ours = median(f"{loc}-relink-{size}-storepatch", f"storepatch relink ({size})")
            theirs = median(f"{loc}-relink-{size}-auto-patchelf", f"auto-patchelf.py + patchelf ({size})")
            ratio(loc, f"auto-patchelf.py + patchelf / relink ({size})", theirs, ours, 20.0)
            # The most any relinker could reach: one that did no more than list the tree.
            floor = median(f"{loc}-relink-{size}-floor", list_floor(size))
            ratio(loc, f"auto-patchelf.py + patchelf / list floor ({size}): the most any relink "
                  "could reach", theirs, floor)
            ratio(loc, f"relink / list floor ({size})", ours, floor)
        for tool, stem, name in (("relink", "storepatch", "storepatch relink"),
                                 ("auto-patchelf.py", "auto-patchelf", "auto-patchelf.py + patchelf")):
            # Five times the files in at most five times the time: linear or better (a fixed cost
            # makes it less). Judged for storepatch only; auto-patchelf.py's is shown beside it.
            ratio(loc, f"{tool}: x5 / base (5 = linear)",
                  median(f"{loc}-relink-x5-{stem}", f"{name} (x5)"),
                  median(f"{loc}-relink-base-{stem}", f"{name} (base)"),
                  5.0 if stem == "storepatch" else None, at_least=False)
        # The same growth in CPU time (user + system, hyperfine's means): the work done, apart from
        # how well the two cores were kept busy. With the list floor beside it for reference.
        for tool, stem, name in (("relink", "storepatch", lambda size: f"storepatch relink ({size})"),
                                 ("list floor", "floor", list_floor)):
            ratio(loc, f"{tool}: CPU time x5 / base (5 = linear)",
                  cpu_time(f"{loc}-relink-x5-{stem}", name("x5")),
                  cpu_time(f"{loc}-relink-base-{stem}", name("base")))

        memory_file = results / f"{loc}-memory.tsv"
        if memory_file.exists():
            memory = {}
            for line in memory_file.read_text().splitlines():
                name, _, rest = line.partition("\t")
                kib = rest.partition("\t")[0]
                if kib.strip().isdigit():
                    memory[name] = int(kib)
            base = memory.get(RG)
            for name, kib in memory.items():
                if name != RG and base:
                    # The target is storepatch's; the peers' figures are shown beside it.
                    ratio(loc, f"peak memory: {name} / ripgrep's on scan ({kib / 1024:.0f} MB / "
                          f"{base / 1024:.0f} MB)", kib, base,
                          2.0 if name.startswith("storepatch") else None, at_least=False)

    cliff_sizes = {}
    for key in ("zeros", "xruns", "slice-zeros", "slice-xruns"):
        value = context.get(f"cliff_{key}_bytes")
        if value:
            cliff_sizes[key] = int(value)
    for kind in ("zeros", "xruns"):
        cliff = median("cliff", f"storepatch scan {kind}")
        real = median("cliff", f"storepatch scan slice-{kind}")
        if cliff and real and kind in cliff_sizes and f"slice-{kind}" in cliff_sizes:
            per_byte = (cliff / cliff_sizes[kind]) / (real / cliff_sizes[f"slice-{kind}"])
            rows.append(("cliff", f"scan time per byte: {kind} / same-size slice of the real venv",
                         per_byte, "≤ 3×", per_byte <= 3.0))

    ratio_lines = [
        "| where | comparison | ratio | target | met |",
        "|---|---|---:|---|---|",
    ]
    for loc, label, value, target, met in rows:
        met_text = "" if met is None else ("yes" if met else "**NO**")
        ratio_lines.append(f"| {loc} | {label.replace('|', '¦')} | {value:.2f}× | {target} | {met_text} |")
    timing_lines = [
        "| group | command | median | min – max | runs |",
        "|---|---|---:|---:|---:|",
    ]
    for (stem, name), entry in commands.items():
        timing_lines.append(
            f"| {stem} | `{name.replace('|', '¦')}` | {seconds(entry['median'])} "
            f"| {seconds(entry['min'])} – {seconds(entry['max'])} | {entry['runs']} |"
        )
    table = "\n".join(ratio_lines)
    print(table)

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    total = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    memory_gib = f"{int(total.group(1)) / 1048576:.1f}" if total else "unknown"
    versions = {
        "storepatch": version([context["storepatch"], "--version"]),
        "storepatch git": version(["git", "-C", str(Path(__file__).parent), "describe", "--always",
                                   "--dirty"]),
        "ripgrep": version([context["rg"], "--version"]),
        "hyperfine": version(["hyperfine", "--version"]),
        "patchelf": version(["patchelf", "--version"]),
        "python3 (auto-patchelf.py)": version(["python3", "--version"]),
        "uv": version(["uv", "--version"]),
        "GNU sed": version(["sed", "--version"]),
        "kernel": platform.release(),
    }
    summary = {
        "context": context,
        "corpus": {k: v for k, v in corpus.items() if k != "fake_store_entries"},
        "versions": versions,
        "medians": {f"{stem}: {name}": entry["median"] for (stem, name), entry in commands.items()},
        "ratios": [
            {"where": loc, "comparison": label, "ratio": value, "target": target, "met": met}
            for loc, label, value, target, met in rows
        ],
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    smoke = context.get("smoke") == "true"
    checks = [f"- {key}: {value}" for key, value in context.items()
              if key.endswith("_check") or key.endswith("_leftover_files")
              or key.endswith("_changed_files")]
    lines = [
        f"# storepatch on the real corpus, {datetime.date.today().isoformat()}, {context['machine']}",
        "",
        "Produced by `benches/run.sh --real` (`benches/real.sh`)"
        + (" --smoke: one run each, **not** a measurement" if smoke else "")
        + "; see `benches/README.md` (\"Real corpus\"). Raw data: the hyperfine exports "
        "(`<where>-<group>.json`, every run's time), `<where>-memory.tsv` (per command the median peak RSS in KiB, then every run's), "
        "`*-relink-*.tsv` (run paths per ELF file after each relinker), `summary.json`.",
        "",
        "## Ratios",
        "",
        table,
        "",
        "## Medians",
        "",
        "\n".join(timing_lines),
        "",
        "## Checks",
        "",
        *checks,
        "",
        "## Corpus",
        "",
        f"`benches/real-corpus/build.py` ({context['corpus']}): authentik's dependency set "
        "(`benches/real-corpus/pylock.toml`) installed by uv into a venv for Debian's python3.11, as "
        f"the output `{corpus['out']}` of a fixed-output derivation.",
        "",
        f"- {corpus['distributions']} distributions, {corpus['files']} regular files "
        f"({corpus['entries']} entries), {corpus['bytes'] / 1e6:.0f} MB",
        f"- {corpus['elf']} ELF files ({corpus['elf_with_store_runpath']} with a store RUNPATH "
        f"from the source builds), {corpus['pyc']} `.pyc` files",
        f"- {references} distinct references (`references.txt`)",
        "",
        "## Machine",
        "",
        f"- CPU: {model.group(1) if model else 'unknown'}, `nproc` = {nproc}, memory "
        f"{memory_gib} GiB",
        f"- load average before / after: {context.get('load_before')} / {context.get('load_after')}",
        f"- filesystems: " + ", ".join(f"{loc} = {context.get(loc + '_filesystem', '?')}" for loc in locations),
        f"- wall time of the run: {context.get('wall_seconds', '?')} s",
        "",
        "## Versions",
        "",
        *[f"- {name}: {value}" for name, value in versions.items()],
        "",
        "## Method",
        "",
        f"- read-only commands: {context['warmup']} warm-up run(s), {context['runs']} timed runs; "
        f"commands that change the tree: {context['mutating_runs']} timed runs, each on a fresh "
        "`cp -a` copy made by hyperfine's `--prepare` (not timed). Output goes through a pipe.",
        "- the read floor is ripgrep counting a literal that occurs nowhere; the rewrite floor "
        "(`rewrite-floor`) writes a same-size temporary file next to each file scrub changes and "
        "renames it over the file, on every core, reading nothing. A scrub can be no faster than "
        "their sum.",
        "- remove-references-to: one timed pass (`shell/old-scrub-pass.sh`) times the number of "
        "distinct references, plus ripgrep's discovery: an estimate, not a measurement.",
        "- relink: both tools get the fake store's library dirs and `NIX_BINTOOLS` with its "
        "dynamic linker and `orig-libc`; each copy's run paths after the last run are compared per "
        "file (`$ORIGIN` expanded).",
    ]
    (results / "README.md").write_text("\n".join(lines) + "\n")
    failed = [f"{loc}: {label}" for loc, label, _, _, met in rows if met is False]
    if failed:
        print("\nnot met: " + "; ".join(failed), file=sys.stderr)
    print(f"\nresults in {results}", file=sys.stderr)


if __name__ == "__main__":
    main()
