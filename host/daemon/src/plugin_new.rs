//! `blobmount plugin new NAME --hook HOOK [--lang rust|js|python]`: write a ready-to-build
//! plugin project.
//!
//! Why the project carries its own SDK and WIT: a plugin author should not need a checkout of
//! this repository, nor a network beyond the crate registry. The SDK sources, `wit/policy.wit`,
//! the shared build-route script (`plugins/route.sh`), the lock file that pins the SDK's
//! dependencies (`plugins/Cargo.lock`) and the templates (`plugins/templates/rust/`) are
//! embedded in the binary with `include_str!` from their single place in the repository, and
//! written out as the project's `vendor/blobmount-plugin-sdk/`, `wit/`, `route.sh`, ... . The
//! SDK finds its WIT at `../../wit` from its own directory, so `vendor/<sdk>/` mirrors the
//! repository's `plugins/sdk/` against `wit/` and the SDK files are written unchanged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use blobmount_policy::Hook;
use clap::Args;

use crate::exit::{EXIT_CONFIG, EXIT_RUNTIME, fail};

/// Where the SDK goes inside a project (two levels below the project, like `plugins/sdk`).
const SDK_DIR: &str = "vendor/blobmount-plugin-sdk";

/// The SDK crate, file by file (path inside the crate, text). A unit test checks that every
/// file of `plugins/sdk/src` is listed.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../plugins/sdk/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "src/glob.rs",
        include_str!("../../../plugins/sdk/src/glob.rs"),
    ),
    (
        "src/params.rs",
        include_str!("../../../plugins/sdk/src/params.rs"),
    ),
    (
        "src/filter.rs",
        include_str!("../../../plugins/sdk/src/filter.rs"),
    ),
    (
        "src/name_conflict.rs",
        include_str!("../../../plugins/sdk/src/name_conflict.rs"),
    ),
    (
        "src/consistency.rs",
        include_str!("../../../plugins/sdk/src/consistency.rs"),
    ),
    (
        "src/acl.rs",
        include_str!("../../../plugins/sdk/src/acl.rs"),
    ),
];
const WIT: &str = include_str!("../../../wit/policy.wit");
const ROUTE_SH: &str = include_str!("../../../plugins/route.sh");
/// The plugins workspace: its `[workspace.package]` and `[profile.release]` are the project's.
const PLUGINS_MANIFEST: &str = include_str!("../../../plugins/Cargo.toml");
/// Pins the SDK's dependencies to the versions this repository builds and tests with; cargo
/// drops the entries the project does not use on its first build.
const PLUGINS_LOCK: &str = include_str!("../../../plugins/Cargo.lock");
const CARGO_TOML: &str = include_str!("../../../plugins/templates/rust/Cargo.toml");
const BUILD_SH: &str = include_str!("../../../plugins/templates/rust/build.sh");
const README: &str = include_str!("../../../plugins/templates/rust/README.md");
const GITIGNORE: &str = "/target\n/.tools\n/*.wasm\n";

/// The files that differ per hook: `src/lib.rs`, `fixtures.yaml`, and the README's examples.
struct HookTemplate {
    lib_rs: &'static str,
    fixtures: &'static str,
    /// `-p KEY=VALUE` arguments equivalent to the fixtures' `params`.
    param_args: &'static str,
    /// A `plugin run` input, on one line.
    example_input: &'static str,
}

fn hook_template(hook: Hook) -> HookTemplate {
    match hook {
        Hook::Filter => HookTemplate {
            lib_rs: include_str!("../../../plugins/templates/rust/filter/lib.rs"),
            fixtures: include_str!("../../../plugins/templates/rust/filter/fixtures.yaml"),
            param_args: "-p suffix=.draft",
            example_input: r#"{"key": "reports/q4.pdf.draft"}"#,
        },
        Hook::NameConflict => HookTemplate {
            lib_rs: include_str!("../../../plugins/templates/rust/name-conflict/lib.rs"),
            fixtures: include_str!("../../../plugins/templates/rust/name-conflict/fixtures.yaml"),
            param_args: "-p suffix=.file",
            example_input: r#"{"parent": "d/", "kind": "file-and-directory", "entries": [{"name": "a", "is-dir": true}, {"name": "a"}]}"#,
        },
        Hook::Consistency => HookTemplate {
            lib_rs: include_str!("../../../plugins/templates/rust/consistency/lib.rs"),
            fixtures: include_str!("../../../plugins/templates/rust/consistency/fixtures.yaml"),
            param_args: "-p ttl=datasets/:forever -p ttl=logs/:100",
            example_input: r#"{"key": "logs/app.log"}"#,
        },
        Hook::Acl => HookTemplate {
            lib_rs: include_str!("../../../plugins/templates/rust/acl/lib.rs"),
            fixtures: include_str!("../../../plugins/templates/rust/acl/fixtures.yaml"),
            param_args: "-p owner=home/alice/:1001:1001:0750",
            example_input: r#"{"object": {"key": "home/alice/notes.txt"}, "uid": 1001, "gid": 1001}"#,
        },
    }
}

/// The SDK feature of a hook (`plugins/sdk/Cargo.toml`).
fn feature(hook: Hook) -> &'static str {
    match hook {
        Hook::Filter => "filter",
        Hook::NameConflict => "name-conflict",
        Hook::Consistency => "consistency",
        Hook::Acl => "acl",
    }
}

/// The language of a new project. Rust has an SDK and a template per hook; JavaScript
/// (componentize-js) and Python (componentize-py) have a template for the filter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

impl Lang {
    fn label(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Js => "JavaScript",
            Lang::Python => "Python",
        }
    }
}

fn parse_lang(s: &str) -> Result<Lang, String> {
    match s {
        "rust" => Ok(Lang::Rust),
        "js" | "javascript" => Ok(Lang::Js),
        "python" | "py" => Ok(Lang::Python),
        _ => Err(format!("unknown language {s:?} (rust, js or python)")),
    }
}

/// The files of a JavaScript or Python filter project (the hook-independent parts are in
/// `plugins/templates/<lang>/`, the policy and its fixtures in `<lang>/filter/`).
struct ScriptTemplate {
    /// (path in the project, text, executable); text gets the `{{...}}` placeholders filled.
    files: &'static [(&'static str, &'static str, bool)],
    gitignore: &'static str,
    /// The file the author edits.
    source: &'static str,
}

fn script_template(lang: Lang) -> Option<ScriptTemplate> {
    match lang {
        Lang::Rust => None,
        Lang::Js => Some(ScriptTemplate {
            files: &[
                (
                    "filter.js",
                    include_str!("../../../plugins/templates/js/filter/filter.js"),
                    false,
                ),
                (
                    "fixtures.yaml",
                    include_str!("../../../plugins/templates/js/filter/fixtures.yaml"),
                    false,
                ),
                (
                    "build.mjs",
                    include_str!("../../../plugins/templates/js/build.mjs"),
                    false,
                ),
                (
                    "package.json",
                    include_str!("../../../plugins/templates/js/package.json"),
                    false,
                ),
                (
                    "build.sh",
                    include_str!("../../../plugins/templates/js/build.sh"),
                    true,
                ),
                (
                    "README.md",
                    include_str!("../../../plugins/templates/js/README.md"),
                    false,
                ),
            ],
            gitignore: "/node_modules\n/*.wasm\n",
            source: "filter.js",
        }),
        Lang::Python => Some(ScriptTemplate {
            files: &[
                (
                    "app.py",
                    include_str!("../../../plugins/templates/python/filter/app.py"),
                    false,
                ),
                (
                    "fixtures.yaml",
                    include_str!("../../../plugins/templates/python/filter/fixtures.yaml"),
                    false,
                ),
                (
                    "build.sh",
                    include_str!("../../../plugins/templates/python/build.sh"),
                    true,
                ),
                (
                    "README.md",
                    include_str!("../../../plugins/templates/python/README.md"),
                    false,
                ),
            ],
            gitignore: "/.venv\n/*.wasm\n__pycache__/\n",
            source: "app.py",
        }),
    }
}

fn parse_hook(s: &str) -> Result<Hook, String> {
    Hook::parse(s)
        .ok_or_else(|| format!("unknown hook {s:?} (filter, name-conflict, consistency, acl)"))
}

/// Arguments of `blobmount plugin new`.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// The plugin's name: the project directory, the crate and the component (`NAME.wasm`).
    pub name: String,
    /// filter, name-conflict, consistency or acl.
    #[arg(long, value_parser = parse_hook)]
    pub hook: Hook,
    /// The plugin's language (only rust so far).
    #[arg(long, value_parser = parse_lang, default_value = "rust")]
    pub lang: Lang,
    /// Where to create the project directory NAME (default: the current directory).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// Why `plugin new` wrote nothing (or stopped part way).
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error("invalid plugin name {name:?}: {why}")]
    InvalidName { name: String, why: String },
    #[error("{} already exists and is not empty; choose another name or --dir", .0.display())]
    NotEmpty(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("this blobmount's embedded plugins/Cargo.toml has no [{0}] section")]
    Template(&'static str),
    #[error(
        "{lang} has a template for the filter hook only, not {hook}: use --lang rust, \
         or write the plugin by hand (docs/plugins.md, \"Other languages\")"
    )]
    NoTemplate {
        lang: &'static str,
        hook: &'static str,
    },
}

/// Words a crate may not be called: Rust keywords, and the crates every build links.
const RESERVED: &[&str] = &[
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    "alloc",
    "core",
    "std",
    "test",
    "proc_macro",
    "proc-macro",
];

/// Check that `name` works as a directory, a crate name and a `.wasm` file name.
pub fn validate_name(name: &str) -> Result<(), NewError> {
    let bad = |why: &str| {
        Err(NewError::InvalidName {
            name: name.to_string(),
            why: why.to_string(),
        })
    };
    let Some(first) = name.chars().next() else {
        return bad("it is empty");
    };
    if name.len() > 64 {
        return bad("longer than 64 characters");
    }
    if !first.is_ascii_lowercase() {
        return bad("it must start with a lowercase ASCII letter");
    }
    // Lowercase only: cargo and rustc warn about other crate names.
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return bad(&format!(
            "{c:?} is not allowed (lowercase ASCII letters, digits, - and _ only)"
        ));
    }
    if RESERVED.contains(&name) {
        return bad("it is a Rust keyword or a standard crate");
    }
    if name.replace('_', "-") == "blobmount-plugin-sdk" {
        return bad("it is the SDK's own name");
    }
    Ok(())
}

/// The lines of `manifest` from `[header]` up to the next section, trimmed.
fn section(manifest: &str, header: &'static str) -> Result<String, NewError> {
    let start = format!("[{header}]");
    let mut lines = manifest.lines().skip_while(|l| l.trim() != start);
    let Some(first) = lines.next() else {
        return Err(NewError::Template(header));
    };
    let mut out = vec![first];
    out.extend(lines.take_while(|l| !l.trim_start().starts_with('[')));
    Ok(out.join("\n").trim_end().to_string())
}

/// Every file of a new JavaScript or Python project (filter hook only).
fn script_files(
    name: &str,
    hook: Hook,
    lang: Lang,
    dir: &Path,
) -> Result<Vec<(String, String, bool)>, NewError> {
    let no_template = || NewError::NoTemplate {
        lang: lang.label(),
        hook: hook.name(),
    };
    let t = script_template(lang).ok_or_else(no_template)?;
    if hook != Hook::Filter {
        return Err(no_template());
    }
    let h = hook_template(hook);
    let fill = |text: &str| -> String {
        text.replace("{{name}}", name)
            .replace("{{hook}}", hook.name())
            .replace("{{param_args}}", h.param_args)
            .replace("{{example_input}}", h.example_input)
            .replace("{{params_yaml}}", fixture_params(h.fixtures))
            .replace("{{dir}}", &dir.display().to_string())
    };
    let mut files: Vec<(String, String, bool)> = t
        .files
        .iter()
        .map(|(p, text, exec)| (p.to_string(), fill(text), *exec))
        .collect();
    files.push((".gitignore".to_string(), t.gitignore.to_string(), false));
    files.push(("wit/policy.wit".to_string(), WIT.to_string(), false));
    Ok(files)
}

/// The `params:` value of a fixtures file, for the README's mount config.
fn fixture_params(fixtures: &str) -> &str {
    fixtures
        .lines()
        .find_map(|l| l.strip_prefix("params:"))
        .map(|v| v.split(" #").next().unwrap_or(v).trim())
        .unwrap_or("{}")
}

/// Every file of a new project: (path inside the project, contents, executable).
fn project_files(
    name: &str,
    hook: Hook,
    dir: &Path,
) -> Result<Vec<(String, String, bool)>, NewError> {
    let t = hook_template(hook);
    let crate_name = name.replace('-', "_");
    let fill = |text: &str| -> String {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{hook}}", hook.name())
            .replace("{{feature}}", feature(hook))
            .replace("{{param_args}}", t.param_args)
            .replace("{{example_input}}", t.example_input)
            .replace("{{params_yaml}}", fixture_params(t.fixtures))
            .replace("{{dir}}", &dir.display().to_string())
    };
    let cargo_toml = fill(CARGO_TOML)
        .replace(
            "{{workspace_package}}",
            &section(PLUGINS_MANIFEST, "workspace.package")?,
        )
        .replace(
            "{{profile_release}}",
            &section(PLUGINS_MANIFEST, "profile.release")?,
        );
    let mut files = vec![
        ("Cargo.toml".to_string(), cargo_toml, false),
        ("Cargo.lock".to_string(), PLUGINS_LOCK.to_string(), false),
        ("src/lib.rs".to_string(), t.lib_rs.to_string(), false),
        ("fixtures.yaml".to_string(), t.fixtures.to_string(), false),
        ("build.sh".to_string(), fill(BUILD_SH), true),
        ("route.sh".to_string(), ROUTE_SH.to_string(), false),
        ("README.md".to_string(), fill(README), false),
        (".gitignore".to_string(), GITIGNORE.to_string(), false),
        ("wit/policy.wit".to_string(), WIT.to_string(), false),
    ];
    files.extend(
        SDK_FILES
            .iter()
            .map(|(p, text)| (format!("{SDK_DIR}/{p}"), text.to_string(), false)),
    );
    Ok(files)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NewError + '_ {
    move |source| NewError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write the project `parent/name/`; returns its path. Refuses an invalid name and an
/// existing non-empty directory before writing anything.
pub fn create(name: &str, hook: Hook, lang: Lang, parent: &Path) -> Result<PathBuf, NewError> {
    validate_name(name)?;
    if lang != Lang::Rust && hook != Hook::Filter {
        return Err(NewError::NoTemplate {
            lang: lang.label(),
            hook: hook.name(),
        });
    }
    let root = parent.join(name);
    match std::fs::read_dir(&root) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(NewError::NotEmpty(root));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&root)(e)),
    }
    let abs = std::path::absolute(&root).map_err(io_err(&root))?;
    let files = match lang {
        Lang::Rust => project_files(name, hook, &abs)?,
        Lang::Js | Lang::Python => script_files(name, hook, lang, &abs)?,
    };
    for (rel, text, exec) in files {
        let path = root.join(&rel);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        write_file(&path, &text, exec)?;
    }
    Ok(abs)
}

fn write_file(path: &Path, text: &str, exec: bool) -> Result<(), NewError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if exec { 0o755 } else { 0o644 };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(text.as_bytes()).map_err(io_err(path))
}

/// `blobmount plugin new`: write the project and print the commands that come next.
pub fn main(args: NewArgs) -> ExitCode {
    match create(&args.name, args.hook, args.lang, &args.dir) {
        Ok(root) => {
            let name = &args.name;
            let hook = args.hook.name();
            let t = hook_template(args.hook);
            println!(
                "created {} ({hook} plugin, {})",
                root.display(),
                args.lang.label()
            );
            println!("next:");
            println!("  cd {}", root.display());
            println!("  bash build.sh                # -> {name}.wasm");
            println!(
                "  blobmount plugin check {name}.wasm --hook {hook} {}",
                t.param_args
            );
            println!("  blobmount plugin test {name}.wasm fixtures.yaml");
            let source = script_template(args.lang).map_or("src/lib.rs", |t| t.source);
            println!("then edit {source} and fixtures.yaml; README.md has the mount config");
            ExitCode::SUCCESS
        }
        Err(
            e
            @ (NewError::InvalidName { .. } | NewError::NotEmpty(_) | NewError::NoTemplate { .. }),
        ) => fail(EXIT_CONFIG, e),
        Err(e @ (NewError::Io { .. } | NewError::Template(_))) => fail(EXIT_RUNTIME, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_make_valid_crates() {
        for ok in ["hide-drafts", "a", "acl_v2", "tenant1"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1plugin",
            "Tenant",
            "hideDrafts",
            "-x",
            "_x",
            "has space",
            "a/b",
            "..",
            "é",
            "fn",
            "std",
            "test",
            "blobmount_plugin_sdk",
            &"x".repeat(65),
        ] {
            let e = validate_name(bad).expect_err(bad);
            assert!(e.to_string().contains("invalid plugin name"), "{e}");
        }
    }

    #[test]
    fn refuses_an_existing_non_empty_directory_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("mine")).unwrap();
        std::fs::write(tmp.path().join("mine/keep.txt"), "x").unwrap();
        let e = create("mine", Hook::Filter, Lang::Rust, tmp.path()).unwrap_err();
        assert!(matches!(e, NewError::NotEmpty(_)), "{e}");
        assert_eq!(
            std::fs::read_dir(tmp.path().join("mine")).unwrap().count(),
            1
        );

        // An empty directory is fine (e.g. a fresh `git init` target made by hand).
        std::fs::create_dir(tmp.path().join("empty")).unwrap();
        create("empty", Hook::Acl, Lang::Rust, tmp.path()).unwrap();
        let e = create("empty", Hook::Acl, Lang::Rust, tmp.path()).unwrap_err();
        assert!(matches!(e, NewError::NotEmpty(_)), "{e}");
    }

    #[test]
    fn js_and_python_have_a_filter_template_only() {
        assert_eq!(parse_lang("rust"), Ok(Lang::Rust));
        assert_eq!(parse_lang("js"), Ok(Lang::Js));
        assert_eq!(parse_lang("python"), Ok(Lang::Python));
        assert!(
            parse_lang("cobol")
                .unwrap_err()
                .contains("rust, js or python")
        );
        let tmp = tempfile::tempdir().unwrap();
        for (lang, source) in [(Lang::Js, "filter.js"), (Lang::Python, "app.py")] {
            let e = create("acl-x", Hook::Acl, lang, tmp.path()).unwrap_err();
            assert!(e.to_string().contains("filter hook only, not acl"), "{e}");
            assert!(!tmp.path().join("acl-x").exists(), "nothing written");
            let name = format!("f-{source}").replace('.', "-");
            let root = create(&name, Hook::Filter, lang, tmp.path()).unwrap();
            for f in [
                source,
                "fixtures.yaml",
                "build.sh",
                "README.md",
                "wit/policy.wit",
            ] {
                let text = std::fs::read_to_string(root.join(f)).unwrap();
                assert!(!text.contains("{{"), "{f}: {text}");
            }
            let build = std::fs::read_to_string(root.join("build.sh")).unwrap();
            assert!(build.contains(&format!("{name}.wasm")), "{build}");
        }
    }

    #[test]
    fn the_project_has_the_sdk_wit_and_one_feature() {
        let tmp = tempfile::tempdir().unwrap();
        let root = create("hide-drafts", Hook::NameConflict, Lang::Rust, tmp.path()).unwrap();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(r#"features = ["name-conflict"]"#),
            "{manifest}"
        );
        assert!(manifest.contains("[workspace.package]") && manifest.contains("[profile.release]"));
        assert!(!manifest.contains("{{"), "{manifest}");
        // The SDK reaches its WIT at ../../wit, as in the repository.
        let sdk = root.join(SDK_DIR);
        assert!(sdk.join("../../wit/policy.wit").is_file());
        assert!(
            std::fs::read_to_string(sdk.join("src/filter.rs"))
                .unwrap()
                .contains(r#"path: "../../wit""#)
        );
        let build = std::fs::read_to_string(root.join("build.sh")).unwrap();
        assert!(build.contains("hide_drafts.wasm") && build.contains("source ./route.sh"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(!readme.contains("{{"), "{readme}");
        assert!(readme.contains(r#"params: {suffix: ".file"}"#), "{readme}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("build.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
    }

    #[test]
    fn every_sdk_source_file_is_embedded() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/sdk/src");
        for e in std::fs::read_dir(src).unwrap() {
            let name = format!("src/{}", e.unwrap().file_name().to_string_lossy());
            assert!(
                SDK_FILES.iter().any(|(p, _)| *p == name),
                "{name} is missing from SDK_FILES"
            );
        }
    }
}
