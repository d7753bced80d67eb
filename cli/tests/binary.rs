//! The binary's command line, run as a process. (Also makes `cargo test --workspace`
//! build the `shoal` binary that the process-level tests in `tests/` run.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn shoal() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    // Whatever the environment of the test run, no logs and a real terminal type: the
    // only thing keeping bars away must be that stderr is not a terminal.
    cmd.env_remove("SHOAL_LOG").env("TERM", "xterm-256color");
    cmd
}

#[test]
fn help_lists_the_commands_and_a_bad_command_fails() {
    let out = shoal().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "write", "scan", "history", "restore", "vacuum", "optimize", "merge",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help:\n{help}");
    }
    let out = shoal().arg("no-such-command").output().unwrap();
    assert!(!out.status.success());
}

fn csv(dir: &Path, n: i64) -> PathBuf {
    let path = dir.join(format!("part{n}.csv"));
    let mut text = String::from("id,name\n");
    for r in 0..50 {
        text.push_str(&format!("{},name-{n}-{r}\n", n * 1000 + r));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `shoal args…`; it must succeed and print exactly one JSON object (one line) on
/// stdout, and no terminal control codes on stderr (which is a pipe here).
fn json_of(args: &[&str]) -> Value {
    let out = shoal().args(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shoal {args:?} failed:\n{stderr}");
    assert_no_progress_drawn(&out, args);
    assert_eq!(
        stdout.lines().count(),
        1,
        "shoal {args:?}: stdout must be one JSON line:\n{stdout}"
    );
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("shoal {args:?}: stdout is not JSON ({e}):\n{stdout}"));
    assert!(v.is_object(), "{v}");
    v
}

fn assert_no_progress_drawn(out: &Output, args: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "shoal {args:?}: control codes on stderr (a progress bar drawn to a pipe?): {stderr:?}"
    );
}

fn int(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("`{key}` is not an integer in {v}"))
}

#[test]
fn maintenance_commands_print_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let table = table.to_str().unwrap();
    for n in 0..4 {
        let file = csv(dir.path(), n);
        let w = json_of(&["write", table, file.to_str().unwrap(), "--json"]);
        assert_eq!(int(&w, "version"), n);
        assert_eq!((int(&w, "rows"), int(&w, "files_added")), (50, 1));
    }

    let o = json_of(&["optimize", table, "--json"]);
    assert_eq!(o["unchanged"], Value::Bool(false));
    assert_eq!(int(&o, "version"), 4);
    assert_eq!(int(&o, "files_removed"), 4);
    assert_eq!(int(&o, "files_added"), 1);
    assert_eq!(int(&o, "bins"), 1);
    assert!(int(&o, "bytes_before") > 0 && int(&o, "bytes_after") > 0);
    for key in [
        "partitions_optimized",
        "files_considered",
        "files_skipped",
        "bins_abandoned",
    ] {
        int(&o, key);
    }
    let again = json_of(&["optimize", table, "--json"]);
    assert_eq!(again["unchanged"], Value::Bool(true));
    assert_eq!(int(&again, "version"), 4);

    // Files must be older than the (zero) retention window by at least a millisecond.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let vacuum = ["vacuum", table, "--retain", "0", "--force", "--json"];
    let dry = json_of(&[&vacuum[..], &["--dry-run"]].concat());
    assert_eq!(dry["dry_run"], Value::Bool(true));
    assert_eq!(int(&dry, "files_deleted"), 4);
    assert_eq!(dry["paths"].as_array().map(Vec::len), Some(4));
    assert_eq!(dry["start_version"], Value::Null);

    let v = json_of(&vacuum);
    assert_eq!(v["dry_run"], Value::Bool(false));
    assert_eq!(int(&v, "version"), 4);
    assert_eq!(int(&v, "files_deleted"), 4);
    assert!(int(&v, "bytes_deleted") > 0);
    assert_eq!(int(&v, "files_kept"), 1);
    assert_eq!((int(&v, "start_version"), int(&v, "end_version")), (5, 6));
    let none_left = json_of(&vacuum);
    assert_eq!(int(&none_left, "files_deleted"), 0);

    let h = json_of(&["history", table, "--json", "--limit", "3"]);
    let entries = h["history"].as_array().expect("a history array");
    let ops: Vec<(i64, &str)> = entries
        .iter()
        .map(|e| (int(e, "version"), e["operation"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [(6, "VACUUM END"), (5, "VACUUM START"), (4, "OPTIMIZE")]
    );
    assert!(entries[2]["operation_metrics"]["numFilesRemoved"].is_string());

    let file = csv(dir.path(), 9);
    json_of(&["write", table, file.to_str().unwrap(), "--json"]);
    let r = json_of(&["restore", table, "--version", "4", "--json"]);
    assert_eq!(r["unchanged"], Value::Bool(false));
    assert_eq!((int(&r, "version"), int(&r, "restored_version")), (8, 4));
    assert_eq!((int(&r, "files_removed"), int(&r, "files_added")), (1, 0));

    let c = json_of(&["checkpoint", table, "--json"]);
    assert_eq!(int(&c, "version"), 8);
    let d = json_of(&["describe", table, "--json"]);
    assert_eq!((int(&d, "version"), int(&d, "num_files")), (8, 1));
    assert_eq!(int(&d, "checkpoint_version"), 8);
}

#[test]
fn failures_print_nothing_on_stdout_and_text_mode_draws_no_bars_into_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let table = table.to_str().unwrap();
    for n in 0..3 {
        let file = csv(dir.path(), n);
        let out = shoal()
            .args(["write", table, file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    // A retention below the table's, unforced: refused.
    let out = shoal()
        .args(["vacuum", table, "--retain", "0", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention"));

    // Without --json the text summary goes to stdout and, stderr being a pipe, no bar
    // is drawn there (with or without --no-progress).
    for extra in [&[][..], &["--no-progress"][..]] {
        let args = [&["optimize", table][..], extra].concat();
        let out = shoal().args(&args).output().unwrap();
        assert!(out.status.success());
        assert_no_progress_drawn(&out, &args);
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let args = [&["vacuum", table][..], extra].concat();
        let out = shoal().args(&args).output().unwrap();
        assert!(out.status.success());
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
