//! The DFS endpoint's client of Azurite's Blob API: the few Blob operations the DFS
//! operations are built from (HEAD/GET/PUT/DELETE blob, Copy Blob, Set Blob Metadata, Put
//! Block, Get Block List, Put Block List, List Blobs, container create/delete), each one
//! SharedKey-signed request on a connection of its own.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::TcpStream;
use std::time::Duration;

use super::auth::sign_upstream;
use super::wire::{
    Request, Response, read_response, write_request, xml_all, xml_first, xml_unescape,
};
use crate::AZURITE_ACCOUNT;

/// Metadata key marking a directory blob, as a hierarchical-namespace account shows it.
pub const FOLDER_KEY: &str = "hdi_isfolder";

/// What Azurite says about one blob.
#[derive(Clone, Debug, Default)]
pub struct Blob {
    pub name: String,
    pub len: u64,
    /// Without quotes.
    pub etag: String,
    /// An HTTP date.
    pub last_modified: String,
    pub content_type: String,
    /// Names lower-cased.
    pub metadata: BTreeMap<String, String>,
}

impl Blob {
    pub fn is_folder(&self) -> bool {
        self.metadata
            .get(FOLDER_KEY)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    fn from_headers(name: &str, r: &Response) -> Blob {
        let h = |k: &str| r.header(k).unwrap_or("").to_string();
        Blob {
            name: name.to_string(),
            len: h("content-length").parse().unwrap_or(0),
            etag: h("etag").trim_matches('"').to_string(),
            last_modified: h("last-modified"),
            content_type: h("content-type"),
            metadata: r
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    k.to_ascii_lowercase()
                        .strip_prefix("x-ms-meta-")
                        .map(|n| (n.to_string(), v.clone()))
                })
                .collect(),
        }
    }
}

/// One page of List Blobs.
#[derive(Debug, Default)]
pub struct Page {
    pub blobs: Vec<Blob>,
    pub prefixes: Vec<String>,
    pub next: Option<String>,
}

/// Azurite on a loopback port.
#[derive(Clone, Copy, Debug)]
pub struct Azurite {
    pub port: u16,
}

impl Azurite {
    /// `/devstoreaccount1/{container}/{key}`, percent-encoded.
    pub fn path(container: &str, key: &str) -> String {
        if key.is_empty() {
            format!("/{AZURITE_ACCOUNT}/{container}")
        } else {
            format!(
                "/{AZURITE_ACCOUNT}/{container}/{}",
                crate::http::encode_key(key)
            )
        }
    }

    /// Send `req` as is (its target final), unsigned: the Blob forwarder's path.
    pub fn send_raw(&self, req: &Request) -> std::io::Result<Response> {
        let s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut w = s.try_clone()?;
        write_request(&mut w, req, &format!("127.0.0.1:{}", self.port))?;
        read_response(&mut BufReader::new(s), &req.method)
    }

    /// Sign and send one request.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> std::io::Result<Response> {
        let mut target = path.to_string();
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", super::wire::encode(v, false)))
                .collect();
            target = format!("{target}?{}", q.join("&"));
        }
        let mut req = Request {
            method: method.to_string(),
            target,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            body,
        };
        sign_upstream(&mut req);
        self.send_raw(&req)
    }

    /// HEAD a blob: `None` when it does not exist.
    pub fn head(
        &self,
        container: &str,
        key: &str,
    ) -> std::io::Result<Result<Option<Blob>, Response>> {
        let r = self.send("HEAD", &Self::path(container, key), &[], &[], Vec::new())?;
        Ok(match r.status {
            200 => Ok(Some(Blob::from_headers(key, &r))),
            404 => {
                if r.error_code() == "ContainerNotFound" {
                    Err(r)
                } else {
                    Ok(None)
                }
            }
            _ => Err(r),
        })
    }

    /// GET a blob (with the given extra headers, e.g. `range`): the raw answer.
    pub fn get(
        &self,
        container: &str,
        key: &str,
        headers: &[(String, String)],
    ) -> std::io::Result<Response> {
        self.send("GET", &Self::path(container, key), &[], headers, Vec::new())
    }

    /// Put Blob (block blob) with `metadata` and `content_type`.
    pub fn put(
        &self,
        container: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
    ) -> std::io::Result<Response> {
        let mut h = meta_headers(metadata);
        h.push(("x-ms-blob-type".into(), "BlockBlob".into()));
        if !content_type.is_empty() {
            h.push(("x-ms-blob-content-type".into(), content_type.into()));
        }
        self.send("PUT", &Self::path(container, key), &[], &h, body)
    }

    /// Replace a blob's metadata.
    pub fn set_metadata(
        &self,
        container: &str,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> std::io::Result<Response> {
        let h = meta_headers(metadata);
        self.send(
            "PUT",
            &Self::path(container, key),
            &[("comp", "metadata")],
            &h,
            Vec::new(),
        )
    }

    pub fn delete(&self, container: &str, key: &str) -> std::io::Result<Response> {
        self.send("DELETE", &Self::path(container, key), &[], &[], Vec::new())
    }

    /// Copy Blob within the account (synchronous on Azurite; a pending copy is waited for).
    pub fn copy(
        &self,
        (from_c, from): (&str, &str),
        (container, to): (&str, &str),
    ) -> std::io::Result<Response> {
        let src = format!("http://127.0.0.1:{}{}", self.port, Self::path(from_c, from));
        let r = self.send(
            "PUT",
            &Self::path(container, to),
            &[],
            &[("x-ms-copy-source".into(), src)],
            Vec::new(),
        )?;
        if r.status == 202 && r.header("x-ms-copy-status") == Some("pending") {
            for _ in 0..600 {
                std::thread::sleep(Duration::from_millis(50));
                let h = self.send("HEAD", &Self::path(container, to), &[], &[], Vec::new())?;
                if h.header("x-ms-copy-status") != Some("pending") {
                    break;
                }
            }
        }
        Ok(r)
    }

    pub fn put_block(
        &self,
        container: &str,
        key: &str,
        id: &str,
        data: Vec<u8>,
    ) -> std::io::Result<Response> {
        self.send(
            "PUT",
            &Self::path(container, key),
            &[("comp", "block"), ("blockid", id)],
            &[],
            data,
        )
    }

    /// Get Block List (all): `(committed, uncommitted)` as `(id, size)` pairs.
    #[allow(clippy::type_complexity)]
    pub fn block_list(
        &self,
        container: &str,
        key: &str,
    ) -> std::io::Result<Result<(Vec<(String, u64)>, Vec<(String, u64)>), Response>> {
        let r = self.send(
            "GET",
            &Self::path(container, key),
            &[("comp", "blocklist"), ("blocklisttype", "all")],
            &[],
            Vec::new(),
        )?;
        if r.status != 200 {
            return Ok(Err(r));
        }
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let blocks = |section: &str| -> Vec<(String, u64)> {
            xml_first_raw(&text, section)
                .map(|s| {
                    xml_all(&s, "Block")
                        .into_iter()
                        .filter_map(|b| {
                            Some((xml_first(b, "Name")?, xml_first(b, "Size")?.parse().ok()?))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Ok((blocks("CommittedBlocks"), blocks("UncommittedBlocks"))))
    }

    /// Put Block List: `committed` ids then `uncommitted` ids, with `metadata` and
    /// `content_type` (which Put Block List would otherwise reset).
    pub fn put_block_list(
        &self,
        container: &str,
        key: &str,
        committed: &[String],
        uncommitted: &[String],
        content_type: &str,
        metadata: &BTreeMap<String, String>,
    ) -> std::io::Result<Response> {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in committed {
            xml.push_str(&format!("<Committed>{id}</Committed>"));
        }
        for id in uncommitted {
            xml.push_str(&format!("<Uncommitted>{id}</Uncommitted>"));
        }
        xml.push_str("</BlockList>");
        let mut h = meta_headers(metadata);
        if !content_type.is_empty() {
            h.push(("x-ms-blob-content-type".into(), content_type.into()));
        }
        self.send(
            "PUT",
            &Self::path(container, key),
            &[("comp", "blocklist")],
            &h,
            xml.into_bytes(),
        )
    }

    /// One page of List Blobs under `prefix` (with metadata), `delimiter` "/" when given.
    pub fn list_page(
        &self,
        container: &str,
        prefix: &str,
        delimiter: bool,
        marker: Option<&str>,
        max: Option<u32>,
    ) -> std::io::Result<Result<Page, Response>> {
        let max = max.map(|m| m.to_string());
        let mut q: Vec<(&str, &str)> = vec![
            ("restype", "container"),
            ("comp", "list"),
            ("include", "metadata"),
            ("prefix", prefix),
        ];
        if delimiter {
            q.push(("delimiter", "/"));
        }
        if let Some(m) = marker {
            q.push(("marker", m));
        }
        if let Some(m) = &max {
            q.push(("maxresults", m));
        }
        let r = self.send("GET", &Self::path(container, ""), &q, &[], Vec::new())?;
        if r.status != 200 {
            return Ok(Err(r));
        }
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let mut page = Page::default();
        for b in xml_all(&text, "Blob") {
            let Some(name) = xml_first(b, "Name") else {
                continue;
            };
            let field = |t: &str| xml_first(b, t).unwrap_or_default();
            let mut metadata = BTreeMap::new();
            if let Some(m) = xml_first_raw(b, "Metadata") {
                let mut rest = m.as_str();
                while let Some(s) = rest.find('<') {
                    let Some(e) = rest[s..].find('>') else { break };
                    let tag = &rest[s + 1..s + e];
                    let close = format!("</{tag}>");
                    let Some(c) = rest[s + e + 1..].find(&close) else {
                        break;
                    };
                    let value = &rest[s + e + 1..s + e + 1 + c];
                    metadata.insert(tag.to_ascii_lowercase(), xml_unescape(value));
                    rest = &rest[s + e + 1 + c + close.len()..];
                }
            }
            page.blobs.push(Blob {
                name,
                len: field("Content-Length").parse().unwrap_or(0),
                etag: field("Etag").trim_matches('"').to_string(),
                last_modified: field("Last-Modified"),
                content_type: field("Content-Type"),
                metadata,
            });
        }
        for p in xml_all(&text, "BlobPrefix") {
            if let Some(n) = xml_first(p, "Name") {
                page.prefixes.push(n);
            }
        }
        page.next = xml_first(&text, "NextMarker").filter(|m| !m.is_empty());
        Ok(Ok(page))
    }

    /// Every blob under `prefix` (no delimiter), all pages.
    pub fn list_all(
        &self,
        container: &str,
        prefix: &str,
    ) -> std::io::Result<Result<Vec<Blob>, Response>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = match self.list_page(container, prefix, false, marker.as_deref(), None)? {
                Ok(p) => p,
                Err(r) => return Ok(Err(r)),
            };
            out.extend(page.blobs);
            match page.next {
                Some(n) => marker = Some(n),
                None => return Ok(Ok(out)),
            }
        }
    }

    /// Get Container Properties as a [`Blob`] named "" (ETag, Last-Modified, metadata): the
    /// filesystem root's record.
    pub fn container_props(&self, container: &str) -> std::io::Result<Result<Blob, Response>> {
        let r = self.container("GET", container)?;
        Ok(if r.status == 200 {
            let mut b = Blob::from_headers("", &r);
            b.len = 0;
            b.content_type = String::new();
            Ok(b)
        } else {
            Err(r)
        })
    }

    /// Replace a container's metadata.
    pub fn set_container_metadata(
        &self,
        container: &str,
        metadata: &BTreeMap<String, String>,
    ) -> std::io::Result<Response> {
        self.send(
            "PUT",
            &Self::path(container, ""),
            &[("restype", "container"), ("comp", "metadata")],
            &meta_headers(metadata),
            Vec::new(),
        )
    }

    pub fn container(&self, method: &str, container: &str) -> std::io::Result<Response> {
        self.send(
            method,
            &Self::path(container, ""),
            &[("restype", "container")],
            &[],
            Vec::new(),
        )
    }
}

fn meta_headers(metadata: &BTreeMap<String, String>) -> Vec<(String, String)> {
    metadata
        .iter()
        .map(|(k, v)| (format!("x-ms-meta-{k}"), v.clone()))
        .collect()
}

/// The raw inner text of the first `<tag>...</tag>`.
fn xml_first_raw(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml[start..end].to_string())
}
