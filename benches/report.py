#!/usr/bin/env python3
"""Turns the hyperfine exports of benches/run.sh into raw.csv, a ratio table and README.md.

usage: report.py RESULTS_DIR

Reads RESULTS_DIR/{scan,scrub,old-pass[,old-full,restore]}.json and context.env; writes raw.csv (one row
per timed run), summary.json and README.md, and prints the table of ratios.
"""

import csv
import datetime
import json
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

# The requirements: (what, faster command, slower command, minimum ratio).
SCAN = "storepatch scan --quiet"
SCAN_JSON = "storepatch scan --json"
RG = "rg -a -o"
OLD_SCAN = "old: find | xargs grep -aohE | sort -u"
READ_FLOOR = "read floor: rg -c (a literal that occurs nowhere)"
SCRUB = "storepatch scrub"
BEST = "best shell: rg -l | sed -i -e ... (one -e per hash)"
RESTORE = "storepatch restore"
SCRUB_BESIDE_RESTORE = "storepatch scrub (beside restore)"
OLD_PASS = "old: one sed -i pass over every file"
OLD_FULL = "old: complete loop"
OLD_EXTRAPOLATED = "old: one batched sed -i per reference (extrapolated)"
OLD_PASS_PER_FILE = "old: one sed -i per file, one pass"
OLD_FULL_PER_FILE = "old: complete loop, one sed -i per file"
OLD_EXTRAPOLATED_PER_FILE = "old: one sed -i per reference per file (extrapolated)"


def read_context(path):
    context = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        context[key] = value
    return context


def load(results):
    """{command name: {"group", "times", "median", ...}} from every hyperfine export."""
    commands = {}
    for group in ("scan", "scrub", "restore", "old-pass", "old-full"):
        path = results / f"{group}.json"
        if not path.exists():
            continue
        for result in json.loads(path.read_text())["results"]:
            times = result["times"]
            commands[result["command"]] = {
                "group": group,
                "times": times,
                "median": statistics.median(times),
                "min": min(times),
                "max": max(times),
                "stddev": statistics.stdev(times) if len(times) > 1 else 0.0,
                "user": result.get("user"),
                "system": result.get("system"),
            }
    return commands


def version(command):
    try:
        output = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=30
        ).stdout
    except OSError:
        return "not found"
    return output.strip().splitlines()[0] if output.strip() else "unknown"


def machine():
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text()
    memory = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    return {
        "cpu": model.group(1) if model else platform.processor() or "unknown",
        "nproc": nproc,
        "memory_gib": f"{int(memory.group(1)) / 1048576:.1f}" if memory else "unknown",
        "kernel": platform.release(),
    }


def seconds(value):
    if value >= 100:
        return f"{value:.0f} s"
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1000:.0f} ms"


def main():
    results = Path(sys.argv[1])
    context = read_context(results / "context.env")
    commands = load(results)
    references = int(context["reference_count"])

    # The old loops, extrapolated linearly: discovery once, then one full pass per distinct match.
    for one_pass, whole in ((OLD_PASS, OLD_EXTRAPOLATED), (OLD_PASS_PER_FILE, OLD_EXTRAPOLATED_PER_FILE)):
        if one_pass in commands and OLD_SCAN in commands:
            commands[whole] = {
                "group": "derived",
                "times": [],
                "median": commands[OLD_SCAN]["median"] + references * commands[one_pass]["median"],
                "min": commands[OLD_SCAN]["min"] + references * commands[one_pass]["min"],
                "max": commands[OLD_SCAN]["max"] + references * commands[one_pass]["max"],
                "stddev": None,
            }

    with (results / "raw.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "command", "run", "seconds"])
        for name, command in commands.items():
            for run, time in enumerate(command["times"], 1):
                writer.writerow([command["group"], name, run, f"{time:.6f}"])

    requirements = [
        ("scan at least as fast as ripgrep", SCAN, RG, 1.0),
        ("scan --json at least as fast as ripgrep", SCAN_JSON, RG, 1.0),
        ("scrub >= 10x faster than the best shell pipeline", SCRUB, BEST, 10.0),
        ("scrub >= 300x faster than one sed per reference per file", SCRUB,
         OLD_EXTRAPOLATED_PER_FILE, 300.0),
        # Same corpus, same run, fresh copies: restore may cost no more than scrub.
        ("restore costs no more than scrub", RESTORE, SCRUB_BESIDE_RESTORE, 1.0),
    ]
    verdicts = []
    for label, fast, slow, minimum in requirements:
        if fast not in commands or slow not in commands:
            continue
        ratio = commands[slow]["median"] / commands[fast]["median"]
        verdicts.append(
            {"requirement": label, "ratio": ratio, "minimum": minimum, "met": ratio >= minimum}
        )
    informative = [
        ("scan vs the old grep pipeline", SCAN, OLD_SCAN),
        ("scrub vs the old loop with sed batched over the files", SCRUB, OLD_EXTRAPOLATED),
        ("scrub vs the complete old loop, one sed per file (measured once)", SCRUB,
         OLD_FULL_PER_FILE),
        ("scrub vs the complete old loop, batched (measured once)", SCRUB, OLD_FULL),
        ("extrapolated vs measured old loop, one sed per file", OLD_FULL_PER_FILE,
         OLD_EXTRAPOLATED_PER_FILE),
        ("extrapolated vs measured old loop, batched", OLD_FULL, OLD_EXTRAPOLATED),
    ]

    # Whether a scrub could meet 10x at all: reading the tree must fit in a tenth of the shell time.
    if READ_FLOOR in commands and BEST in commands:
        budget = commands[BEST]["median"] / 10
        informative_values = [
            ("read floor / (best shell / 10): above 1, reading the tree alone exceeds a 10x scrub",
             commands[READ_FLOOR]["median"] / budget)
        ]
    else:
        informative_values = []

    def timing_rows():
        rows = [
            "| group | command | median | min – max | stddev | runs |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for name, command in commands.items():
            spread = f"{seconds(command['min'])} – {seconds(command['max'])}"
            stddev = "" if command["stddev"] is None else seconds(command["stddev"])
            runs = len(command["times"]) or "derived"
            rows.append(
                f"| {command['group']} | `{name.replace('|', '¦')}` | {seconds(command['median'])} | {spread} "
                f"| {stddev} | {runs} |"
            )
        return rows

    def ratio_rows():
        rows = [
            "| requirement | ratio (slower median / storepatch median) | needed | met |",
            "|---|---:|---:|---|",
        ]
        for verdict in verdicts:
            met = "yes" if verdict["met"] else "**NO**"
            rows.append(
                f"| {verdict['requirement']} | {verdict['ratio']:.2f}x "
                f"| {verdict['minimum']:g}x | {met} |"
            )
        for label, fast, slow in informative:
            if fast in commands and slow in commands:
                ratio = commands[slow]["median"] / commands[fast]["median"]
                rows.append(f"| {label} | {ratio:.2f}x | – | (information) |")
        for label, value in informative_values:
            rows.append(f"| {label} | {value:.2f} | – | (information) |")
        return rows

    table = "\n".join(timing_rows() + [""] + ratio_rows())
    print(table)

    info = machine()
    versions = {
        "storepatch": version([context["storepatch"], "--version"]),
        "storepatch git": version(["git", "-C", str(Path(__file__).parent), "describe",
                                   "--always", "--dirty"]),
        "ripgrep": version([context["rg"], "--version"]),
        "hyperfine": version(["hyperfine", "--version"]),
        "GNU sed": version(["sed", "--version"]),
        "GNU grep": version(["grep", "--version"]),
        "findutils": version(["find", "--version"]),
        "coreutils (sort, cp)": version(["sort", "--version"]),
        "rustc": version(["rustc", "--version"]),
    }
    (results / "summary.json").write_text(
        json.dumps(
            {
                "context": context,
                "machine": info,
                "versions": versions,
                "medians": {name: command["median"] for name, command in commands.items()},
                "requirements": verdicts,
            },
            indent=2,
        )
        + "\n"
    )

    smoke = context["smoke"] == "true"
    today = datetime.date.today().isoformat()
    lines = [
        f"# storepatch whole-tool benchmark, {today}, {context['machine']}",
        "",
        "Produced by `benches/run.sh`"
        + (" --smoke (a tiny corpus, one run each: **not** a measurement)" if smoke else "")
        + "; see `benches/README.md` for what is compared and how to read it. Raw data: "
        "`scan.json`/`scrub.json`/`old-pass.json`"
        + ("/`old-full.json`" if OLD_FULL in commands else "")
        + " (hyperfine exports, per-run times included), the same as CSV, `raw.csv` (one row per "
        "timed run) and `summary.json`.",
        "",
        "## Results",
        "",
        table,
        "",
        "## Corpus",
        "",
        f"Generated by `make-tree --size-mb {context['size_mb']} --files {context['files_param']} "
        f"--referencing-fraction {context['referencing_fraction']} --seed {context['seed']}` "
        "(storepatch-test's `generate_big`): a Python virtualenv with real gcc-built extension "
        "modules, plus bulk site-packages of Python sources, bytecode-like and data blobs and copies "
        "of the extension modules.",
        "",
        f"- {context['tree_files']} regular files ({context['tree_entries']} entries), "
        f"{int(context['tree_bytes']) / 1048576:.0f} MiB on disk",
        f"- {context.get('make_tree_referencing_files', '?')} generated files hold store "
        f"references ({context.get('make_tree_references_written', '?')} full paths and "
        f"{context.get('make_tree_bare_hashes_written', '?')} bare hashes written)",
        f"- {context['hash_count']} distinct hash parts (`hashes.txt`); the old discovery finds "
        f"{context['reference_count']} distinct matches, so the old loop makes "
        f"{context['reference_count']} passes",
        "- store dir: a scratch directory (make-tree writes the fixture's library packages into "
        "it), substituted into every command's pattern; references in the tree are its absolute "
        "path, so they are longer than `/nix/store/...` ones",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, `nproc` = {info['nproc']}",
        f"- memory: {info['memory_gib']} GiB; Linux {info['kernel']}",
        "- the corpus (and every working copy) sits in the page cache: timings are warm-cache, "
        "CPU and syscall bound, not disk bound",
        "",
        "## Tool versions",
        "",
    ]
    lines += [f"- {name}: {value}" for name, value in versions.items()]
    lines += [
        "",
        "## Method and caveats",
        "",
        f"- scan commands are read-only: {context['warmup']} warm-up run(s), then "
        f"{context['runs']} timed runs each, output through a pipe (`--output pipe`, so no tool "
        "can take a `/dev/null` shortcut). `rg` runs with `--no-config -uu` so that no ignore "
        "file hides part of the tree.",
        f"- scrub commands mutate the tree: before every timed run hyperfine's `--prepare` moves "
        "the used working copy aside (deleted at the end: creating files right after mass deletions "
        "is slow on ext4 without a journal), makes a fresh **real** copy with `cp -a` (not `cp -al`: "
        "hard links would let sed and scrub see shared inodes) and runs `sync`; the copy is not "
        "timed.",
        "- both scrubs include their own discovery. The best shell pipeline is "
        "`benches/shell/best-scrub.sh` (storepatch-test's `run_best_shell_pipeline`).",
        f"- **extrapolated**: the old loop (`benches/shell/old-scrub.sh`: "
        "`find | xargs grep | sort -u | while read ref; do find -exec remove-references-to -t "
        "$ref ...; done`) makes one `sed -i` pass over every file per distinct match. It comes in "
        "two forms: one `sed -i` per reference per file (`-exec ... {} \\;`, `--per-file`: the "
        "requirement) and one `sed -i` per reference over files batched by xargs (`-exec ... {} +`, "
        "shown for information). One pass of each (`benches/shell/old-scrub-pass.sh`, hash "
        f"`{context['pass_hash']}`) was timed {context['old_runs']} time(s); the estimate is "
        f"old-discovery median + {context['reference_count']} × pass median (min/max likewise). "
        "Each pass rewrites every file whatever the hash, so passes cost about the same"
        + ("; the complete loops were also timed once (`old-full.json`) to check the estimate."
           if OLD_FULL in commands else "."),
        f"- checks after the runs: files still holding a hash after the best shell pipeline: "
        f"{context['shell_leftover_files']}; `storepatch scan --json` summary after "
        f"`storepatch scrub`: `{context['storepatch_check']}` (0 `references` = nothing live).",
        "- storepatch also rewrites symlink targets and names that hold references; the shell "
        "pipelines only rewrite file contents. storepatch writes only files that hold a reference "
        "(temp file + rename); the old loop rewrites every file once per pass.",
    ]
    (results / "README.md").write_text("\n".join(lines) + "\n")

    failed = [verdict["requirement"] for verdict in verdicts if not verdict["met"]]
    if failed:
        print("\nnot met: " + "; ".join(failed), file=sys.stderr)
    print(f"\nresults in {results}", file=sys.stderr)


if __name__ == "__main__":
    main()
