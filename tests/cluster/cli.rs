//! The binary's command line: bad or missing flags exit non-zero with one clear line.

use std::process::Command;

fn serve(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard")).arg("serve").args(args).env_clear().output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn bad_or_missing_flags_exit_with_one_line() {
    let secret = ["--cluster-secret", "0123456789abcdef0123"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "required arguments were not provided"),
        (
            vec!["--node-id", "x", "--data-dir", "/tmp/x", "--peers", "1=a:1", "--cluster-secret", "0123456789abcdef"],
            "invalid value",
        ),
        ([&["--node-id", "1", "--data-dir", "/tmp/x", "--peers", "1=a"][..], &secret[..]].concat(), "--peers"),
        (
            vec!["--node-id", "1", "--data-dir", "/tmp/x", "--peers", "1=a:1", "--cluster-secret", "short"],
            "--cluster-secret",
        ),
        (
            [&["--node-id", "1", "--data-dir", "/tmp/x", "--peers", "1=a:1", "--api-addr", "nowhere"][..], &secret[..]]
                .concat(),
            "invalid value",
        ),
    ];
    for (args, needle) in cases {
        let (code, stderr) = serve(&args);
        assert_ne!(code, 0, "{args:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn flags_are_also_read_from_the_environment() {
    // A node id from the environment that is not a number is reported as such.
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .env_clear()
        .env("SWITCHBOARD_NODE_ID", "seven")
        .env("SWITCHBOARD_DATA_DIR", "/tmp/x")
        .env("SWITCHBOARD_PEERS", "1=a:1")
        .env("SWITCHBOARD_CLUSTER_SECRET", "0123456789abcdef")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("seven") && stderr.contains("--node-id"), "{stderr}");
}
