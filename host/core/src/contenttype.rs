//! The content type an upload carries, from the file name's extension: a built-in table of
//! common types, laid under the mount's overrides (`write.content-types`) and a default for
//! everything else (`write.content-type-default`, `application/octet-stream`).
//!
//! Why: objects are served over HTTP afterwards (static sites, signed URLs, browsers), which
//! take the type the store holds. Every upload path (whole PUT, parts, streamed writes,
//! renames) asks [`ContentTypes::for_name`], so the type rides on the request that already
//! goes out. Why a table of our own and not `mime_guess`: ~100 types cover what is written
//! through a mount, the overrides cover the rest, and it costs no crate with a build script
//! and a 1,000-entry table compiled into every binary.

use std::collections::BTreeMap;

/// The type of a name whose extension is unknown, unless the config says otherwise.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Most overrides `write.content-types` may hold.
pub const MAX_OVERRIDES: usize = 1000;

/// Built-in extension (lower case, no dot) to type, sorted by extension.
const TABLE: &[(&str, &str)] = &[
    ("7z", "application/x-7z-compressed"),
    ("aac", "audio/aac"),
    ("avi", "video/x-msvideo"),
    ("avif", "image/avif"),
    ("avro", "application/avro"),
    ("bin", "application/octet-stream"),
    ("bmp", "image/bmp"),
    ("bz2", "application/x-bzip2"),
    ("c", "text/x-c"),
    ("cpp", "text/x-c++"),
    ("css", "text/css"),
    ("csv", "text/csv"),
    ("doc", "application/msword"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("eot", "application/vnd.ms-fontobject"),
    ("epub", "application/epub+zip"),
    ("flac", "audio/flac"),
    ("gif", "image/gif"),
    ("go", "text/x-go"),
    ("gz", "application/gzip"),
    ("h", "text/x-c"),
    ("heic", "image/heic"),
    ("htm", "text/html"),
    ("html", "text/html"),
    ("ico", "image/vnd.microsoft.icon"),
    ("ics", "text/calendar"),
    ("ini", "text/plain"),
    ("jar", "application/java-archive"),
    ("java", "text/x-java"),
    ("jpeg", "image/jpeg"),
    ("jpg", "image/jpeg"),
    ("js", "text/javascript"),
    ("json", "application/json"),
    ("jsonl", "application/jsonl"),
    ("log", "text/plain"),
    ("m4a", "audio/mp4"),
    ("md", "text/markdown"),
    ("mid", "audio/midi"),
    ("mjs", "text/javascript"),
    ("mkv", "video/x-matroska"),
    ("mov", "video/quicktime"),
    ("mp3", "audio/mpeg"),
    ("mp4", "video/mp4"),
    ("mpeg", "video/mpeg"),
    ("ndjson", "application/x-ndjson"),
    ("odp", "application/vnd.oasis.opendocument.presentation"),
    ("ods", "application/vnd.oasis.opendocument.spreadsheet"),
    ("odt", "application/vnd.oasis.opendocument.text"),
    ("oga", "audio/ogg"),
    ("ogg", "audio/ogg"),
    ("ogv", "video/ogg"),
    ("otf", "font/otf"),
    ("parquet", "application/vnd.apache.parquet"),
    ("pdf", "application/pdf"),
    ("png", "image/png"),
    ("ppt", "application/vnd.ms-powerpoint"),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("ps", "application/postscript"),
    ("py", "text/x-python"),
    ("rar", "application/vnd.rar"),
    ("rs", "text/x-rust"),
    ("rtf", "application/rtf"),
    ("sh", "application/x-sh"),
    ("sql", "application/sql"),
    ("svg", "image/svg+xml"),
    ("tar", "application/x-tar"),
    ("tgz", "application/gzip"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    ("toml", "application/toml"),
    ("ts", "video/mp2t"),
    ("tsv", "text/tab-separated-values"),
    ("ttf", "font/ttf"),
    ("txt", "text/plain"),
    ("wasm", "application/wasm"),
    ("wav", "audio/wav"),
    ("weba", "audio/webm"),
    ("webm", "video/webm"),
    ("webmanifest", "application/manifest+json"),
    ("webp", "image/webp"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("xhtml", "application/xhtml+xml"),
    ("xls", "application/vnd.ms-excel"),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("xml", "application/xml"),
    ("xz", "application/x-xz"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("zip", "application/zip"),
    ("zst", "application/zstd"),
];

/// How names map to content types on this mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentTypes {
    /// Extension (lower case, no dot) to type; checked before [`TABLE`].
    overrides: BTreeMap<String, String>,
    default: String,
}

impl Default for ContentTypes {
    fn default() -> Self {
        ContentTypes {
            overrides: BTreeMap::new(),
            default: OCTET_STREAM.into(),
        }
    }
}

/// Why a content-type setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentTypeError {
    #[error("{0:?} is not a media type (`type/subtype`)")]
    NotAType(String),
    #[error("{0:?} is not an extension (`.ext`: letters, digits, `-`, `_`, `+`, dots inside)")]
    NotAnExtension(String),
    #[error("{0} entries, at most {MAX_OVERRIDES}")]
    TooMany(usize),
}

impl ContentTypes {
    /// The mount's table: `overrides` maps `.ext` (or `ext`, any case) to a type; `default`
    /// is the type of every other name.
    pub fn new(
        overrides: &BTreeMap<String, String>,
        default: &str,
    ) -> Result<ContentTypes, ContentTypeError> {
        if overrides.len() > MAX_OVERRIDES {
            return Err(ContentTypeError::TooMany(overrides.len()));
        }
        check_type(default)?;
        let mut map = BTreeMap::new();
        for (ext, ty) in overrides {
            check_type(ty)?;
            let e = ext.strip_prefix('.').unwrap_or(ext).to_ascii_lowercase();
            let ok = !e.is_empty()
                && !e.starts_with('.')
                && !e.ends_with('.')
                && e.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.'));
            if !ok {
                return Err(ContentTypeError::NotAnExtension(ext.clone()));
            }
            map.insert(e, ty.trim().to_string());
        }
        Ok(ContentTypes {
            overrides: map,
            default: default.trim().to_string(),
        })
    }

    /// The type of a file named `name` (the last path segment): the longest dotted suffix
    /// the overrides know (`.tar.gz` before `.gz`), else the last extension in the overrides
    /// then the built-in table, else the default. A dotfile's leading dot does not start an
    /// extension (`.bashrc` has none; `.env.json` is JSON).
    ///
    /// A temporary name in the `mkstemp` style of rsync and many editors and downloaders,
    /// `.NAME.XXXXXX` (six letters or digits that are no known extension), takes NAME's
    /// type: the file is about to be renamed to NAME, and uploading it with NAME's type
    /// saves the type change (a properties request, on Azure two) at that rename.
    pub fn for_name(&self, name: &str) -> &str {
        let base = name.rsplit('/').next().unwrap_or(name);
        if let Some(target) = self.temp_target(base) {
            return self.for_name(target);
        }
        let stem = base.strip_prefix('.').unwrap_or(base).to_ascii_lowercase();
        // Every suffix after a dot, longest first.
        let suffixes = stem
            .char_indices()
            .filter(|&(_, c)| c == '.')
            .map(|(i, _)| &stem[i + 1..])
            .filter(|s| !s.is_empty());
        let mut last = None;
        for s in suffixes {
            if let Some(t) = self.overrides.get(s) {
                return t;
            }
            last = Some(s);
        }
        let Some(ext) = last else {
            return &self.default;
        };
        match TABLE.binary_search_by(|(e, _)| (*e).cmp(ext)) {
            Ok(i) => TABLE.get(i).map_or(self.default.as_str(), |(_, t)| t),
            Err(_) => &self.default,
        }
    }

    /// NAME of a temporary name `.NAME.XXXXXX` (see [`ContentTypes::for_name`]).
    fn temp_target<'a>(&self, base: &'a str) -> Option<&'a str> {
        let (stem, tail) = base.strip_prefix('.')?.rsplit_once('.')?;
        let random = tail.len() == 6 && tail.chars().all(|c| c.is_ascii_alphanumeric());
        let lower = tail.to_ascii_lowercase();
        let known = self.overrides.contains_key(&lower)
            || TABLE
                .binary_search_by(|(e, _)| (*e).cmp(lower.as_str()))
                .is_ok();
        (random && !known && !stem.is_empty() && !stem.starts_with('.')).then_some(stem)
    }
}

/// The type an upload of the object named `name` carries when the store holds
/// `existing` for it: a deliberate type set by whoever wrote the object (another tool, an
/// SDK) is kept on a rewrite under the same name; no type, or the stores' own default for
/// an upload without one (`application/octet-stream`, `binary/octet-stream`), is replaced by
/// the name's type. A rename forgets `existing` (the new name's type wins).
pub fn upload_type(types: &ContentTypes, name: &str, existing: Option<&str>) -> String {
    match existing.map(str::trim) {
        Some(t) if !t.is_empty() && !is_store_default(t) => t.to_string(),
        Some(_) | None => types.for_name(name).to_string(),
    }
}

/// The type a store gives an object uploaded without one.
fn is_store_default(t: &str) -> bool {
    t.eq_ignore_ascii_case(OCTET_STREAM) || t.eq_ignore_ascii_case("binary/octet-stream")
}

/// Whether `t` looks like a media type: `type/subtype` of token characters, optionally
/// followed by `; parameters`.
pub fn check_type(t: &str) -> Result<(), ContentTypeError> {
    let bad = || ContentTypeError::NotAType(t.to_string());
    let (essence, params) = match t.split_once(';') {
        Some((e, p)) => (e.trim(), Some(p)),
        None => (t.trim(), None),
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    let (ty, sub) = essence.split_once('/').ok_or_else(bad)?;
    if !token(ty) || !token(sub) {
        return Err(bad());
    }
    if let Some(p) = params
        && (p.trim().is_empty() || p.chars().any(|c| c.is_control()))
    {
        return Err(bad());
    }
    if t.len() > 255 {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(over: &[(&str, &str)], default: &str) -> ContentTypes {
        let m = over
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        ContentTypes::new(&m, default).unwrap()
    }

    #[test]
    fn the_table_is_sorted_and_its_types_are_valid() {
        for w in TABLE.windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
        for (e, t) in TABLE {
            check_type(t).unwrap();
            assert_eq!(e.to_ascii_lowercase(), *e);
        }
    }

    #[test]
    fn extensions_any_case() {
        let c = ContentTypes::default();
        assert_eq!(c.for_name("index.html"), "text/html");
        assert_eq!(c.for_name("INDEX.HTML"), "text/html");
        assert_eq!(c.for_name("Photo.JpG"), "image/jpeg");
        assert_eq!(c.for_name("dir/sub/data.json"), "application/json");
    }

    #[test]
    fn multiple_dots_take_the_last_extension() {
        let c = ContentTypes::default();
        assert_eq!(c.for_name("a.tar.gz"), "application/gzip");
        assert_eq!(c.for_name("report.2024.csv"), "text/csv");
    }

    #[test]
    fn no_extension_dotfiles_and_unknown_get_the_default() {
        let c = ContentTypes::default();
        assert_eq!(c.for_name("Makefile"), OCTET_STREAM);
        assert_eq!(c.for_name(".bashrc"), OCTET_STREAM);
        assert_eq!(c.for_name("trailing."), OCTET_STREAM);
        assert_eq!(c.for_name("x.unknownext"), OCTET_STREAM);
        assert_eq!(c.for_name(".env.json"), "application/json");
        assert_eq!(c.for_name(""), OCTET_STREAM);
    }

    #[test]
    fn mkstemp_temporary_names_take_the_type_of_the_name_they_stand_for() {
        let c = ContentTypes::default();
        // rsync: `.NAME.XXXXXX`, renamed to NAME once written.
        assert_eq!(c.for_name(".index.html.Ab3xQ9"), "text/html");
        assert_eq!(c.for_name("d/.a.tar.gz.zzzzzz"), "application/gzip");
        assert_eq!(c.for_name(".Makefile.a1B2c3"), OCTET_STREAM);
        // Not that pattern: five or seven characters, no leading dot, a known extension.
        assert_eq!(c.for_name(".index.html.Ab3xQ"), OCTET_STREAM);
        assert_eq!(c.for_name(".index.html.Ab3xQ9z"), OCTET_STREAM);
        assert_eq!(c.for_name("index.html.Ab3xQ9"), OCTET_STREAM);
        assert_eq!(c.for_name(".x.jsonld"), c.for_name("x.jsonld"));
        assert_eq!(c.for_name("..html.abcdef"), OCTET_STREAM);
    }

    #[test]
    fn overrides_win_and_the_default_is_configurable() {
        let c = with(
            &[
                (".LOG", "text/x-log"),
                ("tar.gz", "application/x-gtar"),
                (".weird", "application/x-weird"),
            ],
            "binary/octet-stream",
        );
        assert_eq!(c.for_name("app.log"), "text/x-log");
        assert_eq!(c.for_name("APP.Log"), "text/x-log");
        assert_eq!(c.for_name("a.tar.gz"), "application/x-gtar");
        assert_eq!(c.for_name("a.gz"), "application/gzip");
        assert_eq!(c.for_name("a.weird"), "application/x-weird");
        assert_eq!(c.for_name("noext"), "binary/octet-stream");
        assert_eq!(c.for_name("a.unknownext"), "binary/octet-stream");
    }

    #[test]
    fn a_deliberate_existing_type_is_kept_on_rewrite() {
        let c = ContentTypes::default();
        assert_eq!(upload_type(&c, "a.txt", Some("text/x-mine")), "text/x-mine");
        assert_eq!(upload_type(&c, "a.txt", None), "text/plain");
        assert_eq!(upload_type(&c, "a.txt", Some("")), "text/plain");
        assert_eq!(upload_type(&c, "a.txt", Some(OCTET_STREAM)), "text/plain");
        assert_eq!(
            upload_type(&c, "a.txt", Some("binary/octet-stream")),
            "text/plain"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let m = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(matches!(
            ContentTypes::new(&m(".x", "text"), OCTET_STREAM),
            Err(ContentTypeError::NotAType(_))
        ));
        assert!(matches!(
            ContentTypes::new(&m(".x", "text/"), OCTET_STREAM),
            Err(ContentTypeError::NotAType(_))
        ));
        assert!(matches!(
            ContentTypes::new(&m("", "text/plain"), OCTET_STREAM),
            Err(ContentTypeError::NotAnExtension(_))
        ));
        assert!(matches!(
            ContentTypes::new(&m(".a/b", "text/plain"), OCTET_STREAM),
            Err(ContentTypeError::NotAnExtension(_))
        ));
        assert!(matches!(
            ContentTypes::new(&BTreeMap::new(), "nope"),
            Err(ContentTypeError::NotAType(_))
        ));
        ContentTypes::new(&m(".txt", "text/plain; charset=utf-8"), OCTET_STREAM).unwrap();
        let many: BTreeMap<String, String> = (0..=MAX_OVERRIDES)
            .map(|i| (format!(".e{i}"), "text/plain".to_string()))
            .collect();
        assert!(matches!(
            ContentTypes::new(&many, OCTET_STREAM),
            Err(ContentTypeError::TooMany(_))
        ));
    }
}
