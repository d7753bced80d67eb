//! The binary's command line. (Also makes `cargo test --workspace` build the
//! `shoal-compactor` binary that the process-level tests in `tests/` run.)

use std::process::Command;

#[test]
fn help_lists_the_modes_and_a_bad_flag_fails() {
    let exe = env!("CARGO_BIN_EXE_shoal-compactor");
    let out = Command::new(exe).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--once", "--table", "--warehouse", "--listen"] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    let out = Command::new(exe).arg("--no-such-flag").output().unwrap();
    assert!(!out.status.success());
}
