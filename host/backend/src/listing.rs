//! Delimiter listings over the stores' REST APIs, accepting every key the store holds.
//!
//! Why not `object_store`'s listing: it turns every key into a `Path`, and a page that holds a
//! key it rejects (`a//b`, `x/./y`, `..`, control characters) fails as a whole, so one odd
//! object written by another tool would make its whole directory unreadable. It also drops
//! the user metadata Azure can return in the same call, which the core needs to tell a
//! directory marker (`hdi_isfolder=true`) from an empty file without a HEAD per entry.
//!
//! Dialects: S3 `ListObjectsV2` and Azure `List Blobs`. GCS lists over its JSON API instead
//! (`crate::gcs::list`, whose entries carry user metadata too, with the same acceptance of
//! odd keys); it uses this module only for the XML API's HEAD in [`RawLister::content_checksum`].
//! Requests are signed by [`Rest`] with `object_store`'s own authorizers.

use std::time::SystemTime;

use bytes::Bytes;
use quick_xml::events::Event;
use reqwest::Method;

use crate::api::{ListPage, ObjectInfo, Result, UserMetadata};
use crate::checksum::{ChecksumKind, StoredSum, crc32c_from_base64};
use crate::error::BackendError;
use crate::rest::{Rest, encode_segment, percent_decode, status_error};

/// Which listing API a bucket URL speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// S3 `ListObjectsV2` (AWS, S3-compatible stores; the GCS XML API's HEAD for MD5s).
    S3,
    /// Azure Blob `List Blobs` with `include=metadata`.
    Azure,
    /// The same on an account with a hierarchical namespace: `include=metadata,permissions`,
    /// so each entry carries its owner, group and permissions (reported under the
    /// `api::ACCESS_*` pseudo-keys of its metadata).
    AzureHns,
}

/// Lists one bucket/container.
#[derive(Debug)]
pub struct RawLister {
    rest: Rest,
    /// URL of the bucket or container, without a trailing `/`.
    bucket_url: String,
    dialect: Dialect,
}

/// Build `url?k=v&...` with every value percent-encoded the strict way (RFC 3986 unreserved
/// characters kept), which is what signature canonicalisation expects.
pub(crate) fn query_url(url: &str, query: &[(&str, &str)]) -> String {
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_segment(v)))
        .collect();
    format!("{url}?{}", q.join("&"))
}

/// Page tokens carry which S3 continuation mechanism they are for.
const TOKEN_CONTINUATION: &str = "c:";
const TOKEN_START_AFTER: &str = "s:";

impl RawLister {
    pub fn new(rest: Rest, bucket_url: &str, dialect: Dialect) -> Self {
        RawLister {
            rest,
            bucket_url: bucket_url.trim_end_matches('/').to_string(),
            dialect,
        }
    }

    /// One page of the listing of `prefix` (empty or ending with `/`), `/` as delimiter.
    pub async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        max: usize,
    ) -> Result<ListPage> {
        self.list(prefix, token, max, true).await
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
        token: Option<String>,
        max: usize,
        delimited: bool,
    ) -> Result<ListPage> {
        let max = max.clamp(1, 5000).to_string();
        let url = match self.dialect {
            Dialect::S3 => {
                let mut q = vec![
                    ("list-type", "2"),
                    ("encoding-type", "url"),
                    ("max-keys", max.as_str()),
                    ("prefix", prefix),
                ];
                if delimited {
                    q.push(("delimiter", "/"));
                }
                let (name, value) = match token.as_deref() {
                    Some(t) if t.starts_with(TOKEN_START_AFTER) => {
                        ("start-after", &t[TOKEN_START_AFTER.len()..])
                    }
                    Some(t) => (
                        "continuation-token",
                        t.strip_prefix(TOKEN_CONTINUATION).unwrap_or(t),
                    ),
                    None => ("", ""),
                };
                if !name.is_empty() {
                    q.push((name, value));
                }
                // Canonical order (sorted by name) keeps signatures stable.
                q.sort();
                query_url(&self.bucket_url, &q)
            }
            Dialect::Azure | Dialect::AzureHns => {
                let include = match self.dialect {
                    Dialect::AzureHns => "metadata,permissions",
                    Dialect::Azure | Dialect::S3 => "metadata",
                };
                let mut q = vec![
                    ("comp", "list"),
                    ("include", include),
                    ("maxresults", max.as_str()),
                    ("prefix", prefix),
                    ("restype", "container"),
                ];
                if delimited {
                    q.push(("delimiter", "/"));
                }
                if let Some(t) = token.as_deref() {
                    q.push(("marker", t));
                }
                q.sort();
                query_url(&self.bucket_url, &q)
            }
        };
        let what = format!("list {prefix:?}");
        let body = self.rest.get_body(&what, &url).await?;
        let body = String::from_utf8_lossy(&body);
        match self.dialect {
            Dialect::S3 => parse_s3(&body),
            Dialect::Azure | Dialect::AzureHns => parse_azure(&body),
        }
        .map_err(|e| BackendError::Other(format!("{what}: malformed listing: {e}")))
    }

    /// The checksum of kind `kind` the store reports for `key` (one signed HEAD), checked
    /// against `etag`.
    pub async fn content_checksum(
        &self,
        key: &str,
        etag: &str,
        kind: ChecksumKind,
    ) -> Result<Option<StoredSum>> {
        let path: Vec<String> = key.split('/').map(encode_segment).collect();
        let url = format!("{}/{}", self.bucket_url, path.join("/"));
        let r = self
            .rest
            .send("HEAD object", Method::HEAD, &url, &[], Bytes::new())
            .await?;
        if r.status().as_u16() == 404 {
            return Err(BackendError::NotFound { key: key.into() });
        }
        if !r.status().is_success() {
            return Err(status_error("HEAD object", false, r).await);
        }
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok());
        if header("etag") != Some(etag) {
            return Err(BackendError::PreconditionFailed { key: key.into() });
        }
        // GCS: "crc32c=...,md5=..." (composite objects have no md5).
        let goog = |name: &str| {
            header("x-goog-hash")?
                .split(',')
                .find_map(|p| p.trim().strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        if kind == ChecksumKind::Crc32c {
            return Ok(match self.dialect {
                Dialect::S3 => goog("crc32c")
                    .as_deref()
                    .and_then(crc32c_from_base64)
                    .map(StoredSum::Crc32c),
                Dialect::Azure | Dialect::AzureHns => None,
            });
        }
        Ok(match self.dialect {
            Dialect::Azure | Dialect::AzureHns => header("content-md5").and_then(md5_from_base64),
            Dialect::S3 => match header("x-goog-hash") {
                Some(_) => goog("md5").as_deref().and_then(md5_from_base64),
                None if header("x-amz-server-side-encryption") == Some("aws:kms")
                    || header("x-amz-server-side-encryption-customer-algorithm").is_some() =>
                {
                    None
                }
                // A single-part upload's ETag is the MD5 in hex; multipart ETags end in -N.
                None => md5_from_hex(etag.trim_matches('"')),
            },
        }
        .map(StoredSum::Md5))
    }
}

/// One closed element: the path of element names from the root and its text.
struct Closed<'a> {
    path: &'a [String],
    text: String,
    /// The element had `Encoded="true"` (Azure names with characters XML cannot carry).
    encoded: bool,
}

/// Walk a document and report every element when it closes.
fn walk(xml: &str, mut f: impl FnMut(Closed<'_>)) -> std::result::Result<(), String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    // Text and `Encoded` flag of each open element.
    let mut texts: Vec<(String, bool)> = Vec::new();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    loop {
        match reader.read_event().map_err(|e| err(&e))? {
            Event::Start(e) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                texts.push((String::new(), encoded_attr(&e)));
            }
            Event::Empty(e) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                f(Closed {
                    path: &path,
                    text: String::new(),
                    encoded: encoded_attr(&e),
                });
                path.pop();
            }
            Event::End(_) => {
                let (text, encoded) = texts.pop().ok_or("unbalanced end tag")?;
                f(Closed {
                    path: &path,
                    text,
                    encoded,
                });
                path.pop();
            }
            Event::Text(t) => {
                if let Some((buf, _)) = texts.last_mut() {
                    buf.push_str(&t.decode().map_err(|e| err(&e))?);
                }
            }
            Event::CData(t) => {
                if let Some((buf, _)) = texts.last_mut() {
                    buf.push_str(&t.decode().map_err(|e| err(&e))?);
                }
            }
            Event::GeneralRef(r) => {
                let s = match r.resolve_char_ref().map_err(|e| err(&e))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| err(&e))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{name};"))?
                            .to_string()
                    }
                };
                if let Some((buf, _)) = texts.last_mut() {
                    buf.push_str(&s);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if path.is_empty() {
        Ok(())
    } else {
        Err("document ends inside an element".into())
    }
}

fn encoded_attr(e: &quick_xml::events::BytesStart<'_>) -> bool {
    e.attributes()
        .flatten()
        .any(|a| a.key.local_name().as_ref() == b"Encoded" && a.value.as_ref() == b"true")
}

/// ETags are compared with the ones HEAD returns, which are quoted.
fn quoted(etag: String) -> Option<String> {
    let t = etag.trim();
    if t.is_empty() {
        None
    } else if t.starts_with('"') || t.starts_with("W/") {
        Some(t.to_string())
    } else {
        Some(format!("\"{t}\""))
    }
}

fn parse_time(s: &str) -> std::result::Result<SystemTime, String> {
    let t = s.trim();
    let dt = chrono::DateTime::parse_from_rfc3339(t)
        .or_else(|_| chrono::DateTime::parse_from_rfc2822(t))
        .map_err(|e| format!("bad date {t:?}: {e}"))?;
    Ok(SystemTime::from(dt.with_timezone(&chrono::Utc)))
}

/// Parse an S3 `ListBucketResult` (v2, or v1 from stores that ignore `list-type`).
fn parse_s3(xml: &str) -> std::result::Result<ListPage, String> {
    let mut page = ListPage::default();
    let mut cur = ObjectInfo::named(String::new());
    let mut url_encoded = false;
    let mut truncated = false;
    let mut continuation = None;
    let mut next_marker = None;
    let mut problem = None;
    walk(xml, |c| {
        let names: Vec<&str> = c.path.iter().map(String::as_str).collect();
        let res: std::result::Result<(), String> = (|| {
            match names.as_slice() {
                [_, "EncodingType"] => url_encoded = c.text.trim() == "url",
                [_, "IsTruncated"] => truncated = c.text.trim() == "true",
                [_, "NextContinuationToken"] if !c.text.is_empty() => {
                    continuation = Some(c.text.clone())
                }
                [_, "NextMarker"] if !c.text.is_empty() => next_marker = Some(c.text.clone()),
                [_, "Contents", "Key"] => cur.key = c.text.clone(),
                [_, "Contents", "Size"] => {
                    cur.size = c.text.trim().parse().map_err(|e| format!("Size: {e}"))?
                }
                [_, "Contents", "ETag"] => cur.etag = quoted(c.text.clone()),
                [_, "Contents", "LastModified"] => cur.last_modified = parse_time(&c.text)?,
                [_, "Contents"] => {
                    page.objects.push(std::mem::replace(
                        &mut cur,
                        ObjectInfo::named(String::new()),
                    ));
                }
                [_, "CommonPrefixes", "Prefix"] => {
                    page.prefixes.push(c.text.clone());
                }
                _ => {}
            }
            Ok(())
        })();
        if let (Err(e), None) = (res, &problem) {
            problem = Some(e);
        }
    })?;
    if let Some(p) = problem {
        return Err(p);
    }
    // `EncodingType` may come after the entries it applies to.
    if url_encoded {
        for p in &mut page.prefixes {
            *p = percent_decode(p, true);
        }
        for o in &mut page.objects {
            o.key = percent_decode(&o.key, true);
        }
    }
    let last_key = page.objects.iter().map(|o| o.key.clone()).max();
    let last_prefix = page.prefixes.iter().max().cloned();
    page.next = if !truncated {
        None
    } else if let Some(t) = continuation {
        Some(format!("{TOKEN_CONTINUATION}{t}"))
    } else {
        // v1 replies: continue after the last key or prefix returned.
        let after = next_marker
            .map(|m| decode_s3(&m, url_encoded))
            .or(std::cmp::max(last_key, last_prefix));
        match after {
            Some(a) => Some(format!("{TOKEN_START_AFTER}{a}")),
            None => return Err("truncated listing without a continuation".into()),
        }
    };
    Ok(page)
}

fn decode_s3(key: &str, url_encoded: bool) -> String {
    if url_encoded {
        percent_decode(key, true)
    } else {
        key.to_string()
    }
}

/// Parse an Azure `EnumerationResults`.
fn parse_azure(xml: &str) -> std::result::Result<ListPage, String> {
    let mut page = ListPage::default();
    let mut cur = ObjectInfo::named(String::new());
    let mut meta = UserMetadata::new();
    let mut problem = None;
    walk(xml, |c| {
        let names: Vec<&str> = c.path.iter().map(String::as_str).collect();
        let name = || {
            if c.encoded {
                percent_decode(&c.text, false)
            } else {
                c.text.clone()
            }
        };
        let res: std::result::Result<(), String> = (|| {
            match names.as_slice() {
                [_, "NextMarker"] if !c.text.is_empty() => page.next = Some(c.text.clone()),
                [_, "Blobs", "Blob", "Name"] => cur.key = name(),
                [_, "Blobs", "Blob", "Properties", "Content-Length"] => {
                    cur.size = c
                        .text
                        .trim()
                        .parse()
                        .map_err(|e| format!("Content-Length: {e}"))?
                }
                [_, "Blobs", "Blob", "Properties", "Etag"] => cur.etag = quoted(c.text.clone()),
                [_, "Blobs", "Blob", "Properties", "Last-Modified"] => {
                    cur.last_modified = parse_time(&c.text)?
                }
                [_, "Blobs", "Blob", "Properties", "Content-Type"] if !c.text.is_empty() => {
                    cur.content_type = Some(c.text.clone())
                }
                [_, "Blobs", "Blob", "Properties", "Owner"] => {
                    meta.insert(crate::api::ACCESS_OWNER.into(), c.text.clone());
                }
                [_, "Blobs", "Blob", "Properties", "Group"] => {
                    meta.insert(crate::api::ACCESS_GROUP.into(), c.text.clone());
                }
                [_, "Blobs", "Blob", "Properties", "Permissions"] => {
                    meta.insert(crate::api::ACCESS_PERMISSIONS.into(), c.text.clone());
                }
                [_, "Blobs", "Blob", "Metadata", key] => {
                    meta.insert(key.to_ascii_lowercase(), c.text.clone());
                }
                [_, "Blobs", "Blob"] => {
                    let mut o = std::mem::replace(&mut cur, ObjectInfo::named(String::new()));
                    o.metadata = Some(std::mem::take(&mut meta));
                    page.objects.push(o);
                }
                [_, "Blobs", "BlobPrefix", "Name"] => page.prefixes.push(name()),
                _ => {}
            }
            Ok(())
        })();
        if let (Err(e), None) = (res, &problem) {
            problem = Some(e);
        }
    })?;
    match problem {
        Some(p) => Err(p),
        None => Ok(page),
    }
}

fn md5_from_base64(s: &str) -> Option<[u8; 16]> {
    use base64::Engine;
    let v = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()?;
    v.try_into().ok()
}

fn md5_from_hex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_v2_page_with_odd_keys() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>a/</Prefix><KeyCount>3</KeyCount><MaxKeys>2</MaxKeys>
  <Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>
  <Contents><Key>a/x+y%2Fz</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified>
    <ETag>&quot;abc&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>
  <CommonPrefixes><Prefix>a//</Prefix></CommonPrefixes>
  <CommonPrefixes><Prefix>a/%2E%2E/</Prefix></CommonPrefixes>
  <EncodingType>url</EncodingType>
  <NextContinuationToken>tok/=</NextContinuationToken>
</ListBucketResult>"#;
        let p = parse_s3(xml).unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.objects[0].key, "a/x y/z");
        assert_eq!(p.objects[0].size, 12);
        assert_eq!(p.objects[0].etag.as_deref(), Some("\"abc\""));
        assert_eq!(
            p.objects[0].last_modified,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_323_045)
        );
        assert_eq!(p.prefixes, ["a//", "a/../"]);
        assert_eq!(p.next.as_deref(), Some("c:tok/="));
    }

    #[test]
    fn s3_truncated_v1_continues_after_last_entry() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated>\
            <Contents><Key>k1</Key><Size>1</Size><LastModified>2026-01-02T03:04:05Z</LastModified></Contents>\
            <CommonPrefixes><Prefix>p/</Prefix></CommonPrefixes></ListBucketResult>";
        assert_eq!(parse_s3(xml).unwrap().next.as_deref(), Some("s:p/"));
        let done = "<ListBucketResult><Contents><Key>k</Key><Size>1</Size>\
            <LastModified>2026-01-02T03:04:05Z</LastModified></Contents></ListBucketResult>";
        assert_eq!(parse_s3(done).unwrap().next, None);
    }

    /// `include=permissions` on an HNS account: each entry's owner, group and permissions
    /// come as the access pseudo-keys.
    #[test]
    fn azure_hns_page_carries_access() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults><Blobs>
    <Blob><Name>f</Name><Properties><Last-Modified>Wed, 09 Sep 2009 09:20:02 GMT</Last-Modified>
      <Etag>"0x1"</Etag><Content-Length>3</Content-Length><Owner>1000</Owner><Group>100</Group>
      <Permissions>rwxr-x---</Permissions></Properties><Metadata /></Blob>
</Blobs></EnumerationResults>"#;
        let p = parse_azure(xml).unwrap();
        let m = p.objects[0].metadata.clone().unwrap();
        assert_eq!(
            m.get(crate::api::ACCESS_OWNER).map(String::as_str),
            Some("1000")
        );
        assert_eq!(
            m.get(crate::api::ACCESS_GROUP).map(String::as_str),
            Some("100")
        );
        assert_eq!(
            m.get(crate::api::ACCESS_PERMISSIONS).map(String::as_str),
            Some("rwxr-x---")
        );
    }

    #[test]
    fn azure_page_with_metadata_and_interleaved_prefixes() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="c">
  <Prefix>d/</Prefix><Marker/><MaxResults>5000</MaxResults><Delimiter>/</Delimiter>
  <Blobs>
    <BlobPrefix><Name>d/a/</Name></BlobPrefix>
    <Blob><Name>d/a</Name><Properties><Last-Modified>Wed, 09 Sep 2009 09:20:02 GMT</Last-Modified>
      <Etag>0x8CBFF45D8A29A19</Etag><Content-Length>0</Content-Length>
      <Content-Type>application/octet-stream</Content-Type></Properties>
      <Metadata><hdi_isfolder>true</hdi_isfolder></Metadata></Blob>
    <Blob><Name Encoded="true">d/%01x</Name><Properties><Last-Modified>Wed, 09 Sep 2009 09:20:02 GMT</Last-Modified>
      <Etag>"0x1"</Etag><Content-Length>7</Content-Length></Properties><Metadata /></Blob>
    <BlobPrefix><Name>d//</Name></BlobPrefix>
  </Blobs>
  <NextMarker>m1</NextMarker>
</EnumerationResults>"#;
        let p = parse_azure(xml).unwrap();
        assert_eq!(p.prefixes, ["d/a/", "d//"]);
        assert_eq!(p.objects.len(), 2);
        assert_eq!(p.objects[0].key, "d/a");
        assert_eq!(p.objects[0].etag.as_deref(), Some("\"0x8CBFF45D8A29A19\""));
        assert_eq!(
            p.objects[0]
                .metadata
                .as_ref()
                .and_then(|m| m.get("hdi_isfolder"))
                .map(String::as_str),
            Some("true")
        );
        assert_eq!(p.objects[1].key, "d/\u{1}x");
        assert_eq!(p.objects[1].size, 7);
        assert_eq!(p.objects[1].metadata.as_ref().map(|m| m.len()), Some(0));
        assert_eq!(p.next.as_deref(), Some("m1"));
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(
            parse_s3("<ListBucketResult><Contents><Size>x</Size></Contents></ListBucketResult>")
                .is_err()
        );
        assert!(parse_azure("<EnumerationResults><Blobs>").is_err());
    }

    #[test]
    fn query_values_are_strictly_encoded() {
        assert_eq!(
            query_url("http://h/b", &[("prefix", "a b/+"), ("x", "")]),
            "http://h/b?prefix=a%20b%2F%2B&x="
        );
    }

    #[test]
    fn md5_headers_parse() {
        let hex = "9e107d9d372bb6826bd81d3542a419d6";
        let want = md5_from_hex(hex).unwrap();
        assert_eq!(want[0], 0x9e);
        assert_eq!(md5_from_base64("nhB9nTcrtoJr2B01QqQZ1g=="), Some(want));
        assert_eq!(md5_from_hex("abc-2"), None);
        assert_eq!(md5_from_hex("9e107d9d372bb6826bd81d3542a419d6-3"), None);
        assert_eq!(md5_from_base64("not base64!"), None);
    }
}
