//! `blobmount plugin test PLUGIN FIXTURES.yaml`: a table of cases for a plugin author's CI.
//!
//! Why a fixtures file rather than a script around `plugin run`: one command, one exit code,
//! and a line per case that says what was expected and what came back, so a failing CI job
//! reads like a test report. Each case's `input` goes through the same parsing as
//! `plugin run --input` and is compared with what `plugin run` would print
//! (`blobmount_policy::tool::run_value`), so the two commands never drift apart.
//! The plugin is loaded once, exactly as a mount would load it, with the file's `params`.
//!
//! Exit codes: 0 every case passed; 1 a case failed (wrong answer, or the call failed:
//! trap, fuel, deadline); 2 the plugin is unusable or the fixtures file is bad (unreadable,
//! not YAML, unknown fields, a `hook` the component does not implement, a case whose input
//! `plugin run` would refuse). A failing case does not stop the others.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use blobmount_policy::tool::{self, ToolError};
use blobmount_policy::{Hook, LoadError, ParamValue};
use serde::Deserialize;
use serde_json::Value;

use crate::exit::{EXIT_CONFIG, EXIT_RUNTIME, fail};

/// The fixtures file (shape documented in docs/plugins.md, "Test your plugin").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixtures {
    /// The hook; found from the component's exports when absent, must match when given.
    pub hook: Option<Hook>,
    /// Passed to the plugin's init, as in the mount config.
    #[serde(default)]
    pub params: BTreeMap<String, ParamValue>,
    pub cases: Vec<Case>,
}

/// One row of the table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: Option<String>,
    /// What `plugin run --input` takes for the hook.
    pub input: Value,
    /// A mapping (the answer is one item) or a list of mappings (compared item by item):
    /// every field given must equal the answer's.
    pub expect: Value,
}

/// Why the fixtures cannot be used (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{path}: cannot read the fixtures file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The parser's first line only: line and column, never the file's contents.
    #[error("{path}: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: {reason}")]
    Shape { path: PathBuf, reason: String },
    #[error("{path}: hook is {fixture}, but {plugin_path} implements {plugin}")]
    HookMismatch {
        path: PathBuf,
        fixture: Hook,
        plugin_path: PathBuf,
        plugin: Hook,
    },
}

/// Parse and check a fixtures file's text. `path` only names the file in messages.
pub fn parse(path: &Path, text: &str) -> Result<Fixtures, FixtureError> {
    let fx: Fixtures = serde_saphyr::from_str(text).map_err(|e| FixtureError::Yaml {
        path: path.to_path_buf(),
        message: first_line(&e.to_string()),
    })?;
    let shape = |reason: String| FixtureError::Shape {
        path: path.to_path_buf(),
        reason,
    };
    if fx.cases.is_empty() {
        return Err(shape("no cases".into()));
    }
    for (i, c) in fx.cases.iter().enumerate() {
        let ok = match &c.expect {
            Value::Object(_) => true,
            Value::Array(items) => items.iter().all(Value::is_object),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => false,
        };
        if !ok {
            return Err(shape(format!(
                "{}: expect must be a mapping or a list of mappings",
                case_name(i, c)
            )));
        }
    }
    Ok(fx)
}

/// The YAML parser's message without the lines of the file it quotes after it (they may
/// hold a secret passed as a parameter); line and column say where.
fn first_line(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or("invalid YAML");
    first.trim_start_matches("error: ").to_string()
}

fn case_name(i: usize, c: &Case) -> String {
    c.name.clone().unwrap_or_else(|| format!("case {}", i + 1))
}

/// The `(key, value)` pairs `tool::load` takes, repeated keys for lists.
fn param_pairs(params: &BTreeMap<String, ParamValue>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in params {
        match v {
            ParamValue::One(s) => out.push((k.clone(), s.clone())),
            ParamValue::Many(vs) => out.extend(vs.iter().map(|s| (k.clone(), s.clone()))),
        }
    }
    out
}

/// Every field of `expect` (a mapping) is in `got` with an equal value.
fn subset(expect: &Value, got: &Value) -> bool {
    match (expect, got) {
        (Value::Object(e), Value::Object(g)) => e.iter().all(|(k, v)| g.get(k) == Some(v)),
        _ => false,
    }
}

/// Compare a case's `expect` with the answer (`run_value` always answers a list). `Err` holds
/// what to show as "got": the single item for a mapping, the whole list otherwise.
fn compare(expect: &Value, got: &Value) -> Result<(), Value> {
    let items: &[Value] = got.as_array().map(Vec::as_slice).unwrap_or(&[]);
    match expect {
        Value::Array(es) => {
            if es.len() == items.len() && es.iter().zip(items).all(|(e, g)| subset(e, g)) {
                Ok(())
            } else {
                Err(got.clone())
            }
        }
        _ => match items {
            [one] if subset(expect, one) => Ok(()),
            [one] => Err(one.clone()),
            _ => Err(got.clone()),
        },
    }
}

/// The result of one case.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Pass,
    /// A wrong answer, or the call failed.
    Fail(String),
    /// `plugin run` would refuse this input: the fixtures file is wrong (still reported as a
    /// FAIL line, and the run ends with exit 2).
    BadInput(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => Ok(()),
            Outcome::Fail(m) | Outcome::BadInput(m) => f.write_str(m),
        }
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn run_case(policy: &blobmount_policy::WasmPolicy, hook: Hook, case: Case) -> Outcome {
    match tool::run_value(policy, hook, case.input) {
        Ok(got) => match compare(&case.expect, &got) {
            Ok(()) => Outcome::Pass,
            Err(shown) => Outcome::Fail(format!(
                "expected {}, got {}",
                compact(&case.expect),
                compact(&shown)
            )),
        },
        Err(e @ ToolError::Input(_)) => Outcome::BadInput(e.to_string()),
        Err(
            e @ (ToolError::Call(_)
            | ToolError::Load(_)
            | ToolError::Inspect { .. }
            | ToolError::NoHook { .. }
            | ToolError::ManyHooks { .. }),
        ) => Outcome::Fail(e.to_string()),
    }
}

/// Why the run stopped before any case (exit 2).
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

fn prepare(
    plugin: &Path,
    fixtures: &Path,
) -> Result<(Fixtures, Hook, blobmount_policy::WasmPolicy), Unusable> {
    let text = std::fs::read_to_string(fixtures).map_err(|source| FixtureError::Read {
        path: fixtures.to_path_buf(),
        source,
    })?;
    let mut fx = parse(fixtures, &text)?;
    let hook = match fx.hook {
        // The component must implement the hook the fixtures name: checked by loading it
        // for that hook (the precise wrong-world message), and by its exports when they
        // name exactly one hook (a clearer one).
        Some(want) => {
            if let Ok(found) = tool::detect_hook(plugin)
                && found != want
            {
                return Err(FixtureError::HookMismatch {
                    path: fixtures.to_path_buf(),
                    fixture: want,
                    plugin_path: plugin.to_path_buf(),
                    plugin: found,
                }
                .into());
            }
            want
        }
        None => tool::detect_hook(plugin)?,
    };
    let policy = tool::load(plugin, hook, &param_pairs(&std::mem::take(&mut fx.params)))?;
    Ok((fx, hook, policy))
}

/// Run the command; prints a line per case and the totals.
pub fn main(plugin: &Path, fixtures: &Path) -> ExitCode {
    let (fx, hook, policy) = match prepare(plugin, fixtures) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let (mut passed, mut failed, mut bad_input) = (0usize, 0usize, false);
    for (i, case) in fx.cases.into_iter().enumerate() {
        let name = case_name(i, &case);
        match run_case(&policy, hook, case) {
            Outcome::Pass => {
                passed += 1;
                println!("PASS {name}");
            }
            o @ (Outcome::Fail(_) | Outcome::BadInput(_)) => {
                failed += 1;
                bad_input |= matches!(o, Outcome::BadInput(_));
                println!("FAIL {name}: {o}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if bad_input {
        fail(
            EXIT_CONFIG,
            format!(
                "{}: a case's input is not what `plugin run` takes for hook {hook}",
                fixtures.display()
            ),
        )
    } else if failed > 0 {
        ExitCode::from(EXIT_RUNTIME)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p() -> &'static Path {
        Path::new("f.yaml")
    }

    #[test]
    fn the_documented_shape_parses() {
        let fx = parse(
            p(),
            r#"
# a comment
hook: filter
params:
  suffix: ".draft"
  exclude: ["*.tmp", "*.bak"]
cases:
  - name: drafts are hidden
    input: {key: "reports/q4.pdf.draft"}
    expect: {verdict: hidden}
  - input: {now-secs: 0, objects: [{key: a.txt}, {key: b.draft}]}
    expect: [{verdict: visible}, {verdict: hidden}]
"#,
        )
        .unwrap();
        assert_eq!(fx.hook, Some(Hook::Filter));
        assert_eq!(fx.cases.len(), 2);
        assert_eq!(case_name(1, &fx.cases[1]), "case 2");
        assert_eq!(fx.cases[1].input["now-secs"], json!(0));
        let pairs = param_pairs(&fx.params);
        assert_eq!(pairs.len(), 3);
        assert!(pairs.contains(&("exclude".into(), "*.bak".into())));
    }

    #[test]
    fn unknown_fields_are_refused_with_a_position_and_without_the_text() {
        let e = parse(
            p(),
            "cases:\n  - input: {key: a}\n    expected: {verdict: hidden}\n    secret-ish: hunter2\n",
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, FixtureError::Yaml { .. }), "{m}");
        assert!(m.contains("line"), "{m}");
        assert!(!m.contains("hunter2") && !m.contains('\n'), "{m}");

        let e = parse(p(), "hook: filter\ncases: [}\npassword: hunter2\n").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse(p(), "hook: nope\ncases: []\n").unwrap_err();
        assert!(matches!(e, FixtureError::Yaml { .. }), "{e}");
    }

    #[test]
    fn empty_tables_and_scalar_expectations_are_refused() {
        assert!(matches!(
            parse(p(), "cases: []\n"),
            Err(FixtureError::Shape { .. })
        ));
        let e = parse(
            p(),
            "cases:\n  - {name: x, input: {key: a}, expect: hidden}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("x: expect must be"), "{e}");
    }

    #[test]
    fn expectations_are_subsets_compared_item_by_item() {
        let got = json!([{"key": "a", "verdict": "hidden"}]);
        assert_eq!(compare(&json!({"verdict": "hidden"}), &got), Ok(()));
        assert_eq!(compare(&json!([{"verdict": "hidden"}]), &got), Ok(()));
        assert_eq!(
            compare(&json!({"verdict": "visible"}), &got),
            Err(json!({"key": "a", "verdict": "hidden"}))
        );
        assert!(compare(&json!({"verdict": "hidden", "extra": 1}), &got).is_err());
        let two = json!([{"key": "a", "verdict": "visible"}, {"key": "b", "verdict": "hidden"}]);
        assert_eq!(
            compare(
                &json!([{"verdict": "visible"}, {"verdict": "hidden"}]),
                &two
            ),
            Ok(())
        );
        assert_eq!(
            compare(&json!([{"verdict": "visible"}]), &two),
            Err(two.clone())
        );
        assert_eq!(compare(&json!({"verdict": "visible"}), &two), Err(two));
    }
}
