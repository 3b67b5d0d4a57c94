//! Config files for subcommands: `--config FILE` (TOML) and `--print-config`, for any
//! subcommand that flattens [`ConfigArgs`] into its arguments (today `bank branch`).
//!
//! The file's keys are the subcommand's long flag names, dashed as on the command line
//! (`data-dir`, not `data_dir`); a flag that can be repeated takes an array, a switch takes
//! `true` / `false`, every other flag a string or an integer. Settings come from, strongest
//! first: the command line, the config file, the `BANK_*` environment variables, the defaults.
//!
//! Nothing here knows a subcommand's flags: the file is checked against the clap command
//! itself, so a flag added to the subcommand is a config key at once. Each key must name a
//! long flag and each value must pass that flag's own value parser; then the file's values are
//! added to the command line for the flags the command line does not set, and that flag's
//! environment variable is switched off (the file outranks it), and clap parses the whole
//! again. `--print-config` prints the merged result as a file `--config` accepts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, FromArgMatches, Parser};

/// The id of `--config` in clap's matches.
const CONFIG: &str = "config";
/// The id of `--print-config` in clap's matches.
const PRINT_CONFIG: &str = "print_config";

/// `--config` and `--print-config`, flattened into a subcommand's arguments.
#[derive(clap::Args)]
pub struct ConfigArgs {
    /// Read settings from this TOML file: each key is a flag's long name (`listen =
    /// "127.0.0.1:7001"`, `peer = ["2=127.0.0.1:7002"]`, `rejoin = true`). Flags given on the
    /// command line win over the file, the file over BANK_* environment variables.
    #[arg(long = "config", id = CONFIG, value_name = "FILE", env = "BANK_CONFIG")]
    pub file: Option<PathBuf>,
    /// Print the settings merged from the flags, the --config file, the environment and the
    /// defaults, as a config file, and exit without starting.
    #[arg(long = "print-config", id = PRINT_CONFIG)]
    pub print: bool,
}

/// What the command line asks for once config files are merged in.
pub enum Parsed<C> {
    /// Run this command.
    Run(C),
    /// `--print-config`: the merged settings were printed; nothing more to do.
    Printed,
}

/// Parses the command line `args` into `C`, merging the `--config` file of the subcommand
/// that has one. Usage errors, `--help` and `--version` exit as clap does; a bad config file
/// is an error naming the file and the key.
pub fn parse<C: Parser>(args: Vec<OsString>) -> Result<Parsed<C>> {
    // First pass: which subcommand, and which flags the command line sets. Required flags may
    // come from the file: if only they are missing, look again with none required.
    let mut first = C::command();
    first.build();
    let matches = match first.try_get_matches_from_mut(&args) {
        Ok(matches) => matches,
        Err(e) if e.kind() == ErrorKind::MissingRequiredArgument => {
            let mut relaxed = relaxed(C::command());
            relaxed.build();
            get_matches(&mut relaxed, &args)
        }
        Err(e) => e.exit(),
    };
    let Some((path, names)) = config_subcommand(&first, &matches) else {
        return Ok(Parsed::Run(from_matches(&get_matches(&mut first, &args))));
    };
    let mut args = args;
    // Flags set by the file: the environment no longer applies to them.
    let mut from_file = Vec::new();
    if let Some(file) = path {
        let sub_matches = innermost(&matches, &names);
        let sub = find_subcommand(&first, &names);
        for (id, values) in read_file(&file, sub)? {
            if sub_matches.value_source(&id) == Some(ValueSource::CommandLine) {
                continue;
            }
            let Some(arg) = sub.get_arguments().find(|a| a.get_id() == id.as_str()) else {
                continue;
            };
            let Some(long) = arg.get_long() else { continue };
            let switch = is_switch(arg);
            args.extend(values.into_iter().map(|v| {
                OsString::from(if switch {
                    format!("--{long}")
                } else {
                    format!("--{long}={v}")
                })
            }));
            from_file.push(id);
        }
    }
    let mut command = without_env(C::command(), &names, &from_file);
    command.build();
    let matches = get_matches(&mut command, &args);
    let sub_matches = innermost(&matches, &names);
    if sub_matches.get_flag(PRINT_CONFIG) {
        // In the order of the flags' definitions (`without_env` moved some).
        print!("{}", render(find_subcommand(&first, &names), sub_matches)?);
        return Ok(Parsed::Printed);
    }
    Ok(Parsed::Run(from_matches(&matches)))
}

/// Reads the environment variable `old` as `new` when only `old` is set (a renamed flag's
/// variable keeps working). Call before any thread starts.
pub fn rename_env(old: &str, new: &str) {
    if std::env::var_os(new).is_none() {
        if let Some(value) = std::env::var_os(old) {
            std::env::set_var(new, value);
        }
    }
}

/// `command` with the environment variables of the flags `ids` switched off, wherever on the
/// path `names` of subcommands they are defined (a global flag: at the top).
fn without_env(mut command: Command, names: &[String], ids: &[String]) -> Command {
    let here: Vec<String> = command
        .get_arguments()
        .filter(|a| ids.iter().any(|id| a.get_id() == id.as_str()))
        .map(|a| a.get_id().to_string())
        .collect();
    for id in here {
        let no_env: Option<&'static str> = None;
        command = command.mut_arg(id, |arg| arg.env(no_env));
    }
    match names.split_first() {
        Some((name, rest)) => command.mut_subcommand(name, |sub| without_env(sub, rest, ids)),
        None => command,
    }
}

/// `command` with no flag required, in it or in its subcommands.
fn relaxed(mut command: Command) -> Command {
    let required: Vec<String> = command
        .get_arguments()
        .filter(|a| a.is_required_set())
        .map(|a| a.get_id().to_string())
        .collect();
    for id in required {
        command = command.mut_arg(id, |arg| arg.required(false));
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, relaxed);
    }
    command
}

/// Parses `args` with `command`, exiting as clap does on a usage error, `--help` or
/// `--version`.
fn get_matches(command: &mut Command, args: &[OsString]) -> ArgMatches {
    command
        .try_get_matches_from_mut(args)
        .unwrap_or_else(|e| e.exit())
}

/// `C` from matches clap already checked against `C`'s own command; exits as clap does if
/// they do not fit (a bug in the argument definitions, not in the user's input).
fn from_matches<C: FromArgMatches>(matches: &ArgMatches) -> C {
    C::from_arg_matches(matches).unwrap_or_else(|e| e.exit())
}

/// The innermost subcommand on the command line, by its path of names, if it takes a config
/// file; with the file, if one was given.
fn config_subcommand(
    command: &Command,
    matches: &ArgMatches,
) -> Option<(Option<PathBuf>, Vec<String>)> {
    let mut names = Vec::new();
    let mut command = command;
    let mut matches = matches;
    while let Some((name, sub_matches)) = matches.subcommand() {
        names.push(name.to_string());
        command = command.find_subcommand(name)?;
        matches = sub_matches;
    }
    if names.is_empty() || command.get_arguments().all(|a| a.get_id() != CONFIG) {
        return None;
    }
    Some((matches.get_one::<PathBuf>(CONFIG).cloned(), names))
}

/// The matches of the subcommand at `names`.
fn innermost<'m>(matches: &'m ArgMatches, names: &[String]) -> &'m ArgMatches {
    names.iter().fold(matches, |m, name| {
        m.subcommand_matches(name)
            .unwrap_or_else(|| unreachable!("subcommand {name} was on the command line"))
    })
}

/// The subcommand at `names` (which exists: it was found on the command line).
fn find_subcommand<'c>(command: &'c Command, names: &[String]) -> &'c Command {
    names.iter().fold(command, |c, name| {
        c.find_subcommand(name)
            .unwrap_or_else(|| unreachable!("subcommand {name} was on the command line"))
    })
}

/// Whether `arg` is an on/off switch (`--rejoin`), which takes no value.
fn is_switch(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// Whether `arg` is a setting a config file may hold: a long flag other than --help,
/// --version and the config options themselves.
fn is_setting(arg: &clap::Arg) -> bool {
    let id = arg.get_id().as_str();
    arg.get_long().is_some()
        && !matches!(id, CONFIG | PRINT_CONFIG)
        && !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
        && !arg.is_hide_set()
}

/// Reads and checks `file` against `command`'s flags: every key (arg id -> its values as they
/// would be written on the command line), or an error naming the file and the key.
fn read_file(file: &Path, command: &Command) -> Result<Vec<(String, Vec<String>)>> {
    let shown = file.display();
    let text = std::fs::read_to_string(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("{shown}: no such config file"),
        _ => anyhow!("{shown}: cannot read the config file: {e}"),
    })?;
    settings(&shown.to_string(), &text, command)
}

/// Checks a config file's `text` against `command`'s flags (see [`read_file`]); errors name
/// the file as `shown`.
fn settings(shown: &str, text: &str, command: &Command) -> Result<Vec<(String, Vec<String>)>> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow!("{shown}: {}", toml_error(text, &e)))?;
    let known: Vec<&clap::Arg> = command.get_arguments().filter(|a| is_setting(a)).collect();
    let mut settings = Vec::new();
    for (key, value) in &table {
        let Some(arg) = known.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            let dashed = key.replace('_', "-");
            if known.iter().any(|a| a.get_long() == Some(dashed.as_str())) {
                bail!(
                    "{shown}: key {key:?} is spelled {dashed:?} (keys are the flags' long names)"
                );
            }
            let names: Vec<&str> = known.iter().filter_map(|a| a.get_long()).collect();
            bail!(
                "{shown}: key {key:?} is not a bank {} setting (known: {})",
                command.get_name(),
                names.join(", ")
            );
        };
        let values = key_values(key, value, arg)
            .with_context(|| format!("{shown}: key {key:?}"))
            .map_err(|e| anyhow!("{e:#}"))?;
        for text in &values {
            check_value(arg, text).map_err(|why| {
                let shown_value = match value {
                    toml::Value::Array(_) => toml::Value::String(text.clone()),
                    _ => value.clone(),
                };
                anyhow!(
                    "{shown}: key {key:?}: {shown_value} is not a valid {}: {why}",
                    value_name(arg)
                )
            })?;
        }
        settings.push((arg.get_id().to_string(), values));
    }
    Ok(settings)
}

/// The command-line values `value` stands for, or why its TOML type does not fit `arg`.
fn key_values(key: &str, value: &toml::Value, arg: &clap::Arg) -> Result<Vec<String>> {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            // Given, the switch flips its default; left out, the default stays (and the
            // environment no longer applies, see `parse`).
            toml::Value::Boolean(on) => {
                let default_on = matches!(arg.get_action(), ArgAction::SetFalse);
                Ok(if *on != default_on {
                    vec![on.to_string()]
                } else {
                    Vec::new()
                })
            }
            other => bail!("expected true or false, found {}", type_of(other)),
        },
        ArgAction::Append => match value {
            toml::Value::Array(items) => items.iter().map(scalar).collect(),
            other => Ok(vec![scalar(other).with_context(|| {
                format!("{key} can be repeated: write an array, e.g. {key} = [\"...\"]")
            })?]),
        },
        _ => Ok(vec![scalar(value)?]),
    }
}

/// A string or an integer as command-line text.
fn scalar(value: &toml::Value) -> Result<String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        other => bail!("expected a string or an integer, found {}", type_of(other)),
    }
}

/// The TOML type of `value`, in words.
fn type_of(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Checks `text` with `arg`'s own value parser (on a command of that one flag, without its
/// environment variable); the parser's reason if it refuses it.
fn check_value(arg: &clap::Arg, text: &str) -> Result<(), String> {
    if is_switch(arg) {
        return Ok(());
    }
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    let no_env: Option<&'static str> = None;
    let alone = Command::new("check")
        .no_binary_name(true)
        .arg(arg.clone().env(no_env).required(false));
    match alone.try_get_matches_from([format!("--{long}={text}")]) {
        Ok(_) => Ok(()),
        Err(e) => Err(match std::error::Error::source(&e) {
            Some(reason) => reason.to_string(),
            None => one_line(&e),
        }),
    }
}

/// How `arg`'s value is called in its help (`HOST:PORT`, `DIR`), else its long name.
fn value_name(arg: &clap::Arg) -> String {
    match arg.get_value_names().and_then(|names| names.first()) {
        Some(name) => name.to_string(),
        None => arg.get_long().unwrap_or_default().to_string(),
    }
}

/// Where and why `text` is not TOML, on one line: "not valid TOML at line L, column C: why".
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let why = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("not valid TOML at line {line}, column {column}: {why}")
        }
        None => format!("not valid TOML: {why}"),
    }
}

/// An error's text on one line, without clap's "error: " prefix and usage hints.
fn one_line(error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    first.trim_start_matches("error: ").trim().to_string()
}

/// The settings in `matches` as a config file for `command`: every setting with a value, then
/// the unset ones as comments.
fn render(command: &Command, matches: &ArgMatches) -> Result<String> {
    let mut set = String::new();
    let mut unset = Vec::new();
    for arg in command.get_arguments().filter(|a| is_setting(a)) {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        let value = match arg.get_action() {
            _ if is_switch(arg) => toml::Value::Boolean(matches.get_flag(id)),
            action => {
                let raw: Vec<String> = match matches.get_raw(id) {
                    Some(raw) => raw
                        .map(|v| {
                            v.to_str().map(str::to_string).ok_or_else(|| {
                                anyhow!("the value of --{long} is not UTF-8: a config file cannot hold it")
                            })
                        })
                        .collect::<Result<_>>()?,
                    None => Vec::new(),
                };
                if matches!(action, ArgAction::Append) {
                    toml::Value::Array(raw.iter().map(|v| typed(v)).collect())
                } else if let Some(first) = raw.first() {
                    typed(first)
                } else {
                    unset.push(long);
                    continue;
                }
            }
        };
        set.push_str(&format!("{long} = {value}\n"));
    }
    if !unset.is_empty() {
        set.push_str(&format!("# not set: {}\n", unset.join(", ")));
    }
    Ok(set)
}

/// `text` as a TOML integer if it is one written plainly, else as a string.
fn typed(text: &str) -> toml::Value {
    match text.parse::<i64>() {
        Ok(n) if n.to_string() == text => toml::Value::Integer(n),
        _ => toml::Value::String(text.to_string()),
    }
}

/// The config file decoder under generated input: arbitrary text and mutations of the example
/// files, checked against `bank branch`'s flags. An error is the right answer; a panic fails.
/// `PROPTEST_CASES` overrides the 10,000 cases of each.
#[cfg(test)]
mod fuzz {
    use clap::CommandFactory;
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    const SAMPLES: &[&str] = &[
        include_str!("../../examples/config/branch-1.toml"),
        include_str!("../../examples/config/branch-2.toml"),
        "rejoin = true\npeer = \"2=127.0.0.1:7002\"\nid = 2\n",
    ];

    const TOKENS: &[&str] = &[
        "=",
        "\"",
        "'",
        "[",
        "]",
        "[[",
        "]]",
        "{",
        "}",
        ",",
        "#",
        "\n",
        "\r",
        "\\",
        "\\u",
        "\"\"\"",
        "'''",
        "true",
        "-1",
        "0x1",
        "1e999",
        "nan",
        "inf",
        "1979-05-27",
        "T07:32:00Z",
        "9223372036854775808",
        "\u{0}",
        "é",
        "\u{feff}",
        "id",
        "peer",
        "listen",
        "data-dir",
        "drain-timeout",
        "rejoin",
        "config",
        "help",
        ".",
        "=[]",
        "={}",
    ];

    fn config() -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(10_000);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn branch() -> Command {
        let mut command = crate::Cli::command();
        command.build();
        command
            .find_subcommand("branch")
            .cloned()
            .unwrap_or_else(|| unreachable!("bank has a branch subcommand"))
    }

    /// A sample with bytes flipped, tokens inserted, bytes removed, or cut short.
    fn mutated() -> impl Strategy<Value = String> {
        let edit = prop_oneof![
            (any::<Index>(), 1..=255u8).prop_map(|(at, mask)| (at, Some(mask), "", 0)),
            (any::<Index>(), prop::sample::select(TOKENS)).prop_map(|(at, t)| (at, None, t, 0)),
            (any::<Index>(), 1..32usize).prop_map(|(at, cut)| (at, None, "", cut)),
        ];
        (
            prop::sample::select(SAMPLES),
            prop::collection::vec(edit, 1..8),
        )
            .prop_map(|(sample, edits)| {
                let mut bytes = sample.as_bytes().to_vec();
                for (at, mask, token, cut) in edits {
                    let i = at.index(bytes.len() + 1);
                    match mask {
                        Some(mask) if i < bytes.len() => bytes[i] ^= mask,
                        Some(_) => bytes.truncate(i.saturating_sub(1)),
                        None => {
                            bytes.splice(i..i, token.bytes());
                            let start = i + token.len();
                            let end = (start + cut).min(bytes.len());
                            bytes.drain(start..end);
                        }
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            })
    }

    #[test]
    fn the_samples_are_valid() {
        let branch = branch();
        for sample in SAMPLES {
            settings("sample.toml", sample, &branch).expect("a valid sample");
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = settings("fuzz.toml", &text, &branch());
        }

        #[test]
        fn mutated_samples_never_panic(text in mutated()) {
            let _ = settings("fuzz.toml", &text, &branch());
        }
    }
}
