//! The binary's command line. (Also makes `cargo test --workspace` build the `shoal`
//! binary that the process-level tests in `tests/` run.)

use std::process::Command;

#[test]
fn help_lists_the_commands_and_a_bad_command_fails() {
    let exe = env!("CARGO_BIN_EXE_shoal");
    let out = Command::new(exe).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "write", "scan", "history", "restore", "vacuum", "optimize", "merge",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help:\n{help}");
    }
    let out = Command::new(exe).arg("no-such-command").output().unwrap();
    assert!(!out.status.success());
}
