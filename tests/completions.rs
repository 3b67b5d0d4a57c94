//! `bank completions SHELL`, the built binary: a script naming the subcommands for each shell,
//! and a clear refusal of a shell it does not know.

mod common;

use common::bank;

#[test]
fn each_shell_gets_a_script_naming_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let run = bank(["completions", shell]);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{shell}: exit {}; stderr: {}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        );
        for word in ["branch", "account", "completions", "--data-dir"] {
            assert!(stdout.contains(word), "{shell}: no {word:?} in:\n{stdout}");
        }
    }
}

#[test]
fn an_unknown_shell_is_refused() {
    let run = bank(["completions", "tcsh"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "accepted tcsh");
    assert!(run.stdout.is_empty(), "printed a script for tcsh");
    assert!(
        stderr.contains("tcsh") && stderr.contains("bash"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
