//! Regression tests, one per bug, each with the issue it was found under.
use std::process::Command;

use crate::common::{TestTree, run_ok, storepatch};

/// Relinking a tree given as a relative path wrote relative run paths (`tree/lib`), which the
/// loader resolves against its working directory.
// See: #4
#[test]
fn relink_of_a_relative_tree_writes_absolute_run_paths() {
    let tree = TestTree::new();
    let lib_dir = tree.path("libs");
    fs_err::create_dir_all(&lib_dir).unwrap();
    let library = tree.write("src/answer.c", "int answer(void) { return 42; }\n");
    let extension = tree.write(
        "src/ext.c",
        "int answer(void);\nint twice(void) { return 2 * answer(); }\n",
    );
    let gcc = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("gcc").args(args).status().unwrap();
        assert!(status.success());
    };
    gcc(&[
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        "-Wl,-soname,libanswer.so.1".as_ref(),
        "-o".as_ref(),
        lib_dir.join("libanswer.so.1").as_os_str(),
        library.as_os_str(),
    ]);
    let module = tree.path("pkg/ext.so");
    fs_err::create_dir_all(module.parent().unwrap()).unwrap();
    gcc(&[
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        "-o".as_ref(),
        module.as_os_str(),
        extension.as_os_str(),
        lib_dir.join("libanswer.so.1").as_os_str(),
    ]);
    run_ok(
        storepatch()
            .current_dir(&tree.root)
            .args(["relink", "--library-path", "libs", "pkg"]),
    );
    let run_path = run_ok(storepatch().args(["elf", "--print-rpath"]).arg(&module));
    let run_path = String::from_utf8(run_path.stdout).unwrap();
    assert_eq!(
        run_path.trim(),
        fs_err::canonicalize(&lib_dir)
            .unwrap()
            .display()
            .to_string()
    );
}
