//! `storepatch audit`: health checks of relinked, scrubbed and broken trees.
use std::os::unix::fs::PermissionsExt;

use storepatch_test::cmd_snapshot;

use crate::common::{TestTree, storepatch, storepatch_as_nobody};
use crate::relink::Scrubbed;

#[test]
fn scrubbed_tree_is_unhealthy_and_relinked_site_packages_are_healthy() {
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    cmd_snapshot!(scrubbed.filters(), storepatch().args(["audit", "--store-dir"]).arg(&scrubbed.store).arg(&fixture.venv), @"
    success: false
    exit_code: 1
    ----- stdout -----
    PROBLEM                   PATH  DETAIL
    missing #! interpreter    [TMP]/venv/bin/barkit-tool  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-python3-[PYTHON_VERSION]/bin/python[VER]
    missing #! interpreter    [TMP]/venv/bin/fastfoo-cli  [TMP]/venv/bin/python
    dangling symlink          [TMP]/venv/bin/python  -> [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-python3-[PYTHON_VERSION]/bin/python[VER]
    dangling symlink          [TMP]/venv/bin/python3  -> python
    dangling symlink          [TMP]/venv/bin/python[VER]  -> python
    dead run path entry       [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3/lib
    dead run path entry       [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9/lib
    missing library           [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]  libbar.so.2
    missing library           [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]  libbaz.so.0
    dead run path entry       [TMP]/venv/lib/python[VER]/site-packages/fastfoo/_speedups[EXT_SUFFIX]  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib
    missing library           [TMP]/venv/lib/python[VER]/site-packages/fastfoo/_speedups[EXT_SUFFIX]  libfoo.so.1
    missing venv home         [TMP]/venv/pyvenv.cfg  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-python3-[PYTHON_VERSION]/bin
    dangling symlink          [TMP]/venv/share/lib/libfoo.so.1  -> [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib/libfoo.so.1

      LIVE  SCRUBBED  STORE PATH
         0         1  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-gcc-wrapper-13.3.0
         0         3  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3
         0         2  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9
         0         1  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libffi-3.4.6
         0         2  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0
         0         1  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-openssl-3.0.15
         0        11  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-python3-[PYTHON_VERSION]
         0         1  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-source

    ----- stderr -----
    unhealthy: 13 problems in 45 entries (2 ELF files); 0 live and 22 scrubbed references to 8 store paths; 0 errors
    ");
    let output = scrubbed
        .relink(&fixture.library_dirs())
        .arg(&fixture.venv)
        .output()
        .unwrap();
    assert!(output.status.success());
    cmd_snapshot!(scrubbed.filters(), storepatch().args(["audit", "--store-dir"]).arg(&scrubbed.store).arg(&fixture.site_packages), @"
    success: true
    exit_code: 0
    ----- stdout -----
      LIVE  SCRUBBED  STORE PATH
         1         0  [TMP]/store/488hznmlk6r1sgmypmnlvhp1fk817yq9-libbar-2.3
         0         2  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3
         0         1  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9
         0         4  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-python3-[PYTHON_VERSION]
         0         1  [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-source
         1         0  [TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0
         1         0  [TMP]/store/kn9z1a0vr8mm1yi81h095aji6qifxr3n-libbaz-0.9

    ----- stderr -----
    healthy: 0 problems in 22 entries (2 ELF files); 3 live and 8 scrubbed references to 7 store paths; 0 errors
    ");
}

#[test]
fn broken_tree_problems_and_errors() {
    let tree = TestTree::new();
    tree.symlink("dangling", "does/not/exist");
    tree.symlink("fine", "script");
    tree.write("script", "#!/nonexistent/bin/python3 -u\nprint()\n");
    tree.write("env-script", "#!/usr/bin/env python3\nprint()\n");
    let executable = tree.path("bin/true");
    fs_err::create_dir_all(executable.parent().unwrap()).unwrap();
    fs_err::copy("/bin/true", &executable).unwrap();
    let status = storepatch()
        .args([
            "elf",
            "--set-interpreter",
            "/nonexistent/ld-linux-x86-64.so.2",
        ])
        .arg(&executable)
        .status()
        .unwrap();
    assert!(status.success());
    let elf = fs_err::read("/bin/true").unwrap();
    tree.write("lib/truncated.so", &elf[..200]);
    cmd_snapshot!(tree.filters(), storepatch().arg("audit").arg(&tree.root), @"
    success: false
    exit_code: 1
    ----- stdout -----
    PROBLEM                   PATH  DETAIL
    missing interpreter       [TMP]/tree/bin/true  /nonexistent/ld-linux-x86-64.so.2
    dangling symlink          [TMP]/tree/dangling  -> does/not/exist
    malformed ELF             [TMP]/tree/lib/truncated.so  malformed ELF: program header table at offset 0x40
    missing #! interpreter    [TMP]/tree/script  /nonexistent/bin/python3

    ----- stderr -----
    unhealthy: 4 problems in 9 entries (2 ELF files); 0 live and 0 scrubbed references to 0 store paths; 0 errors
    ");

    // An unreadable file is an error (exit 2), as `nobody` sees it.
    tree.write("secret", "data");
    tree.chmod("secret", 0o000);
    fs_err::set_permissions(&tree.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let Some(mut command) = storepatch_as_nobody() else {
        return;
    };
    cmd_snapshot!(tree.filters(), command.args(["audit", "--quiet"]).arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot read `[TMP]/tree/secret`: Permission denied (os error 13)
    ");
}
