//! GCS delimiter listings over the JSON API (`GET /storage/v1/b/BUCKET/o`), whose entries
//! carry each object's user metadata.
//!
//! Why not the XML API's `ListObjectsV2` (the S3 dialect of `crate::listing`): its entries have
//! no user metadata, so the core had to HEAD every file to learn the mode, owner and times
//! blobmount keeps there (`ls -l` of N files cost N HEADs). A JSON listing returns
//! `metadata` with each item, so an entry here is as complete as a HEAD and the core trusts it
//! (`ObjectInfo::metadata` is `Some`, empty for an object without user metadata).
//!
//! The ETag of an entry must be the one the rest of the backend reports for the same object:
//! HEAD, reads pinned with `If-Match` and upload answers all go over the XML API, whose ETag
//! is not the JSON `etag` field. It is derived from the item (see [`xml_etag`]); an item whose
//! XML ETag cannot be derived (a composite object has no MD5) is returned without ETag and
//! without metadata, so the core HEADs that one file as it did before.
//!
//! As in `crate::listing`, every key the store holds is accepted: names are JSON strings
//! (no percent-decoding), and an odd name (`a//b`, `..`, control characters, `foo` beside
//! `foo/`) is just a string. Only a reply that is not a listing fails the page.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::api::{ListPage, ObjectInfo, Result, UserMetadata};
use crate::error::BackendError;
use crate::rest::Rest;

/// The fields a listing needs (GCS honours `fields`; fake-gcs-server ignores it and sends
/// whole resources, which parse the same).
const FIELDS: &str = "nextPageToken,prefixes,items(name,size,updated,etag,md5Hash,componentCount,contentType,metadata)";

/// GCS returns at most 1000 items per page.
const MAX_PAGE: usize = 1000;

/// Lists one bucket over the JSON API.
#[derive(Debug)]
pub struct JsonLister {
    rest: Rest,
    /// `{base}/storage/v1/b/{bucket}/o`.
    objects_url: String,
}

impl JsonLister {
    pub fn new(rest: Rest, objects_url: String) -> Self {
        JsonLister { rest, objects_url }
    }

    /// One page of the listing of `prefix` (empty or ending with `/`), `/` as delimiter.
    pub async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        max: usize,
    ) -> Result<ListPage> {
        self.list(prefix, token.as_deref(), max, true).await
    }

    /// The first page of the listing of every key under `prefix`, without delimiter.
    pub async fn list_under(&self, prefix: &str, max: usize) -> Result<ListPage> {
        let mut page = self.list(prefix, None, max, false).await?;
        page.next = None;
        Ok(page)
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max: usize,
        delimited: bool,
    ) -> Result<ListPage> {
        let (seen, token) = match token {
            Some(t) => {
                let (seen, inner) = split_token(t).ok_or_else(|| {
                    BackendError::Other(format!("list {prefix:?}: not a page token: {t:?}"))
                })?;
                (Some(seen), Some(inner))
            }
            None => (None, None),
        };
        let mut page = self.fetch(prefix, token, max, delimited).await?;
        // fake-gcs-server returns every prefix from the page on with each page; GCS returns
        // each once, in order. Either way a prefix is reported once.
        if let Some(seen) = seen.filter(|s| !s.is_empty()) {
            page.prefixes.retain(|p| p.as_str() > seen);
        }
        let last = page
            .prefixes
            .iter()
            .max()
            .map(String::as_str)
            .or(seen)
            .unwrap_or("");
        page.next = page.next.map(|t| join_token(last, &t));
        Ok(page)
    }

    async fn fetch(
        &self,
        prefix: &str,
        token: Option<&str>,
        max: usize,
        delimited: bool,
    ) -> Result<ListPage> {
        let url = self.url(prefix, token, max, delimited);
        let what = format!("list {prefix:?}");
        let body = self.rest.get_body(&what, &url).await?;
        parse_page(&body)
            .map_err(|e| BackendError::Other(format!("{what}: malformed listing: {e}")))
    }

    fn url(&self, prefix: &str, token: Option<&str>, max: usize, delimited: bool) -> String {
        let max = max.clamp(1, MAX_PAGE).to_string();
        let mut q = vec![
            ("fields", FIELDS),
            ("maxResults", max.as_str()),
            ("prefix", prefix),
        ];
        if delimited {
            q.push(("delimiter", "/"));
        }
        if let Some(t) = token {
            q.push(("pageToken", t));
        }
        crate::listing::query_url(&self.objects_url, &q)
    }
}

/// Our page token: the greatest prefix reported so far and GCS's token,
/// `{length of the prefix}:{prefix}{token}`.
fn join_token(last_prefix: &str, token: &str) -> String {
    format!("{}:{last_prefix}{token}", last_prefix.len())
}

/// (greatest prefix reported so far, GCS's token) of one of our page tokens.
fn split_token(t: &str) -> Option<(&str, &str)> {
    let (n, rest) = t.split_once(':')?;
    let n: usize = n.parse().ok()?;
    if !rest.is_char_boundary(n) {
        return None;
    }
    Some(rest.split_at(n))
}

/// Parse one `storage#objects` reply.
pub(crate) fn parse_page(body: &[u8]) -> std::result::Result<ListPage, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let doc = v.as_object().ok_or("not a JSON object")?;
    let mut page = ListPage::default();
    if let Some(items) = doc.get("items") {
        for item in items.as_array().ok_or("`items` is not an array")? {
            page.objects.push(parse_item(item)?);
        }
    }
    if let Some(prefixes) = doc.get("prefixes") {
        for p in prefixes.as_array().ok_or("`prefixes` is not an array")? {
            let p = p.as_str().ok_or("a prefix is not a string")?;
            // fake-gcs-server repeats prefixes on every page; once is enough.
            if !page.prefixes.iter().any(|q| q == p) {
                page.prefixes.push(p.to_string());
            }
        }
    }
    page.next = doc
        .get("nextPageToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok(page)
}

fn parse_item(item: &Value) -> std::result::Result<ObjectInfo, String> {
    let str_of = |k: &str| item.get(k).and_then(Value::as_str);
    let name = str_of("name").ok_or("an item without a name")?;
    let size = match item.get("size") {
        Some(Value::String(s)) => s.parse().map_err(|e| format!("size of {name:?}: {e}"))?,
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| format!("size of {name:?}: {n}"))?,
        _ => return Err(format!("{name:?} without a size")),
    };
    let last_modified = match str_of("updated") {
        Some(t) => whole_seconds(t).map_err(|e| format!("updated of {name:?}: {e}"))?,
        None => SystemTime::UNIX_EPOCH,
    };
    let etag = xml_etag(item);
    // Without the ETag HEAD would report, the entry is not complete: the core HEADs it.
    let metadata = etag.as_ref().map(|_| user_metadata(item));
    Ok(ObjectInfo {
        key: name.to_string(),
        size,
        etag,
        last_modified,
        metadata,
        content_type: str_of("contentType")
            .filter(|t| !t.is_empty())
            .map(str::to_string),
    })
}

/// `updated` to whole seconds: HEAD reports `Last-Modified` in seconds, and a listing and a
/// HEAD of the same object must agree on its time.
fn whole_seconds(t: &str) -> std::result::Result<SystemTime, String> {
    let dt = chrono::DateTime::parse_from_rfc3339(t.trim()).map_err(|e| e.to_string())?;
    let secs = dt.timestamp();
    Ok(if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    })
}

/// User metadata with names in lower case, as HEAD reports them (`x-goog-meta-*` headers);
/// values that are not strings are skipped.
fn user_metadata(item: &Value) -> UserMetadata {
    let mut m = UserMetadata::new();
    if let Some(map) = item.get("metadata").and_then(Value::as_object) {
        for (k, v) in map {
            if let Some(v) = v.as_str() {
                m.insert(k.to_ascii_lowercase(), v.to_string());
            }
        }
    }
    m
}

/// The ETag the XML API (HEAD, GET with `If-Match`) reports for the object an item describes,
/// quoted as HEAD returns it.
///
/// - GCS: the MD5 of the data in hex for an object that is not composite. The JSON `etag`
///   (generation and metageneration, base64) never equals the MD5.
/// - fake-gcs-server: the JSON `etag`, which it sets to the MD5 in base64.
/// - A composite object (`componentCount`) or one without MD5: unknown (`None`).
fn xml_etag(item: &Value) -> Option<String> {
    if item.get("componentCount").is_some() {
        return None;
    }
    let md5 = item.get("md5Hash")?.as_str()?;
    if item.get("etag").and_then(Value::as_str) == Some(md5) {
        return Some(format!("\"{md5}\""));
    }
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(md5.trim())
        .ok()?;
    if raw.len() != 16 {
        return None;
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("\"{hex}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(json: &str) -> ListPage {
        parse_page(json.as_bytes()).unwrap()
    }

    #[test]
    fn odd_names_prefixes_and_token() {
        let p = page(
            r#"{"kind":"storage#objects","nextPageToken":"d/a b+",
            "prefixes":["d//","d/../","d/foo/"],
            "items":[
              {"name":"d/..","size":"1","updated":"2026-01-02T03:04:05.678Z",
               "etag":"ndTkYSaMgDT1yFZOFVxnpg==","md5Hash":"ndTkYSaMgDT1yFZOFVxnpg==",
               "generation":"17","contentType":"text/plain",
               "metadata":{"blobmount-mode":"0640","Mixed-Case":"V"}},
              {"name":"d/\u0001ctl","size":"0","updated":"2026-01-02T03:04:05Z",
               "etag":"ndTkYSaMgDT1yFZOFVxnpg==","md5Hash":"ndTkYSaMgDT1yFZOFVxnpg=="},
              {"name":"d/foo","size":"12","updated":"2026-01-02T03:04:05Z",
               "etag":"ndTkYSaMgDT1yFZOFVxnpg==","md5Hash":"ndTkYSaMgDT1yFZOFVxnpg=="},
              {"name":"d/%41","size":"3","updated":"2026-01-02T03:04:05Z",
               "etag":"ndTkYSaMgDT1yFZOFVxnpg==","md5Hash":"ndTkYSaMgDT1yFZOFVxnpg=="}
            ]}"#,
        );
        let names: Vec<&str> = p.objects.iter().map(|o| o.key.as_str()).collect();
        // Names are taken as they are: no percent-decoding.
        assert_eq!(names, ["d/..", "d/\u{1}ctl", "d/foo", "d/%41"]);
        assert_eq!(p.prefixes, ["d//", "d/../", "d/foo/"]);
        assert_eq!(p.next.as_deref(), Some("d/a b+"));
        let o = &p.objects[0];
        assert_eq!(o.size, 1);
        assert_eq!(o.content_type.as_deref(), Some("text/plain"));
        // Whole seconds, as HEAD's Last-Modified.
        assert_eq!(
            o.last_modified,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045)
        );
        let m = o.metadata.as_ref().unwrap();
        assert_eq!(m.get("blobmount-mode").map(String::as_str), Some("0640"));
        assert_eq!(m.get("mixed-case").map(String::as_str), Some("V"));
        assert_eq!(p.objects[3].size, 3);
    }

    /// An item without `metadata` is complete all the same: an empty map, not `None`
    /// (which would make the core HEAD it).
    #[test]
    fn missing_metadata_is_empty_not_unknown() {
        let p = page(
            r#"{"items":[{"name":"k","size":"5","updated":"2026-01-02T03:04:05Z",
                "etag":"XUFAKrxLKna5cZ2REBfFkg==","md5Hash":"XUFAKrxLKna5cZ2REBfFkg=="}]}"#,
        );
        assert_eq!(p.objects[0].metadata.as_ref().map(|m| m.len()), Some(0));
        assert_eq!(p.next, None);
        assert!(p.prefixes.is_empty());
    }

    #[test]
    fn etag_is_the_one_head_reports() {
        // fake-gcs-server: JSON etag == md5Hash, and HEAD's ETag is that, quoted.
        let emu = page(
            r#"{"items":[{"name":"k","size":"5","etag":"XUFAKrxLKna5cZ2REBfFkg==",
                "md5Hash":"XUFAKrxLKna5cZ2REBfFkg=="}]}"#,
        );
        assert_eq!(
            emu.objects[0].etag.as_deref(),
            Some("\"XUFAKrxLKna5cZ2REBfFkg==\"")
        );
        // GCS: the JSON etag encodes the generation; the XML ETag is the MD5 in hex.
        let gcs = page(
            r#"{"items":[{"name":"k","size":"5","etag":"CNjP9ouF1vUCEAE=",
                "md5Hash":"XUFAKrxLKna5cZ2REBfFkg=="}]}"#,
        );
        assert_eq!(
            gcs.objects[0].etag.as_deref(),
            Some("\"5d41402abc4b2a76b9719d911017c592\"")
        );
        assert!(gcs.objects[0].metadata.is_some());
        // Composite: no MD5, ETag unknown, so the entry is incomplete and gets a HEAD.
        let comp = page(
            r#"{"items":[{"name":"k","size":"5","etag":"CNjP9ouF1vUCEAE=",
                "componentCount":2,"metadata":{"blobmount-mode":"0600"}}]}"#,
        );
        assert_eq!(comp.objects[0].etag, None);
        assert_eq!(comp.objects[0].metadata, None);
    }

    #[test]
    fn repeated_prefixes_are_listed_once_and_empty_pages_parse() {
        let p = page(r#"{"prefixes":["a/","b/","a/"],"nextPageToken":""}"#);
        assert_eq!(p.prefixes, ["a/", "b/"]);
        assert_eq!(p.next, None);
        let empty = page(r#"{"kind":"storage#objects"}"#);
        assert!(empty.objects.is_empty() && empty.prefixes.is_empty());
    }

    #[test]
    fn page_tokens_carry_the_last_prefix() {
        for (last, inner) in [("", "d/a"), ("d/\u{1}:é/", "t:k/=é"), ("9:", "")] {
            let t = join_token(last, inner);
            assert_eq!(split_token(&t), Some((last, inner)), "{t:?}");
        }
        assert_eq!(split_token("x"), None);
        assert_eq!(split_token("9:short"), None);
        assert_eq!(split_token("1:é"), None);
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [
            "<xml/>",
            "[]",
            r#"{"items":{}}"#,
            r#"{"items":[{"size":"1"}]}"#,
            r#"{"items":[{"name":"k","size":"x"}]}"#,
            r#"{"items":[{"name":"k"}]}"#,
            r#"{"items":[{"name":"k","size":"1","updated":"yesterday"}]}"#,
            r#"{"prefixes":[1]}"#,
        ] {
            assert!(parse_page(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_values_are_strictly_encoded() {
        crate::install_crypto_provider();
        let l = JsonLister::new(
            Rest::new(Default::default(), crate::rest::Signer::Anonymous).unwrap(),
            "http://h/storage/v1/b/bk/o".into(),
        );
        let u = l.url("a b/+", Some("t/=&"), 5000, true);
        assert!(u.starts_with("http://h/storage/v1/b/bk/o?fields="), "{u}");
        assert!(
            u.contains("&maxResults=1000&prefix=a%20b%2F%2B&delimiter=%2F&pageToken=t%2F%3D%26"),
            "{u}"
        );
        assert!(!l.url("p/", None, 10, false).contains("delimiter"));
    }
}
