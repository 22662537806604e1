//! Path List (`GET /{filesystem}?resource=filesystem`): the JSON `{"paths":[...]}` of a
//! directory's entries (or its whole subtree with `recursive=true`), directories without
//! marker blobs included, in depth-first name order, `maxResults` at a time with an
//! `x-ms-continuation` token (the hex of the last name returned) while more remain.

use std::collections::BTreeMap;

use super::acl::Access;
use super::blob::{Azurite, Blob};
use super::ns::{Kind, R, fail, implicit_etag, stat, upstream};
use super::wire::{Request, Response};

/// The most entries in one answer, as on the real service.
const MAX_RESULTS: usize = 5000;

struct Entry {
    name: String,
    dir: bool,
    len: u64,
    etag: String,
    modified: String,
    access: Access,
}

impl Entry {
    fn of_blob(b: &Blob) -> Entry {
        // A `name/` blob (a flat-namespace client's directory marker) is that directory.
        let dir = b.is_folder() || b.name.ends_with('/');
        Entry {
            name: b.name.trim_end_matches('/').to_string(),
            dir,
            len: if dir { 0 } else { b.len },
            etag: b.etag.clone(),
            modified: b.last_modified.clone(),
            access: Access::from_meta(&b.metadata, if dir { Kind::Dir } else { Kind::File }),
        }
    }

    fn implicit(name: &str, modified: &str) -> Entry {
        Entry {
            name: name.to_string(),
            dir: true,
            len: 0,
            etag: implicit_etag(name),
            modified: modified.to_string(),
            access: Access::from_meta(&BTreeMap::new(), Kind::Dir),
        }
    }

    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "name": self.name,
            "contentLength": self.len.to_string(),
            "etag": self.etag,
            "lastModified": self.modified,
            "owner": self.access.owner,
            "group": self.access.group,
            "permissions": self.access.permissions(),
        });
        if self.dir {
            v["isDirectory"] = "true".into();
        }
        v
    }
}

/// Depth-first order: compare names component by component.
fn order(name: &str) -> Vec<String> {
    name.split('/').map(str::to_string).collect()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Path List.
pub fn list(az: &Azurite, fs: &str, req: &Request) -> R<Response> {
    let dir = req.q("directory").unwrap_or_default();
    let dir = dir.trim_matches('/').to_string();
    let recursive = match req.q("recursive").as_deref() {
        Some("true") => true,
        Some("false") | None => false,
        Some(_) => {
            return Err(fail(
                400,
                "InvalidQueryParameterValue",
                "recursive must be true or false",
            ));
        }
    };
    let max = match req.q("maxResults") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| {
                fail(
                    400,
                    "InvalidQueryParameterValue",
                    "maxResults must be a positive integer",
                )
            })?
            .min(MAX_RESULTS),
        None => MAX_RESULTS,
    };
    let after = match req.q("continuation") {
        Some(c) => Some(
            unhex(&c)
                .ok_or_else(|| fail(400, "InvalidQueryParameterValue", "bad continuation token"))?,
        ),
        None => None,
    };
    if !dir.is_empty() {
        match stat(az, fs, &dir)? {
            Some(n) if n.kind == Kind::Dir => {}
            _ => {
                return Err(fail(
                    404,
                    "PathNotFound",
                    "The specified path does not exist.",
                ));
            }
        }
    } else {
        // The filesystem must exist.
        super::ns::expect(az.container("GET", fs)?, &[200])?;
    }
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut entries: BTreeMap<Vec<String>, Entry> = BTreeMap::new();
    if recursive {
        let blobs = az.list_all(fs, &prefix)?.map_err(|r| upstream(&r))?;
        for b in &blobs {
            let rest = &b.name[prefix.len()..];
            let mut at = 0;
            while let Some(i) = rest[at..].find('/') {
                let name = format!("{prefix}{}", &rest[..at + i]);
                entries
                    .entry(order(&name))
                    .or_insert_with(|| Entry::implicit(&name, &b.last_modified));
                at += i + 1;
            }
            let e = Entry::of_blob(b);
            if !e.name.is_empty() && e.name.len() >= prefix.len() {
                entries.insert(order(&e.name), e);
            }
        }
    } else {
        let mut marker: Option<String> = None;
        loop {
            let page = az
                .list_page(fs, &prefix, true, marker.as_deref(), None)?
                .map_err(|r| upstream(&r))?;
            for b in &page.blobs {
                let e = Entry::of_blob(b);
                if e.name.len() >= prefix.len() {
                    entries.insert(order(&e.name), e);
                }
            }
            for p in &page.prefixes {
                let name = p.trim_end_matches('/');
                if name.is_empty() {
                    continue;
                }
                entries
                    .entry(order(name))
                    .or_insert_with(|| Entry::implicit(name, &super::ns::epoch()));
            }
            match page.next {
                Some(n) => marker = Some(n),
                None => break,
            }
        }
    }
    let start = after.map(|a| order(&a));
    let mut page: Vec<&Entry> = entries
        .iter()
        .filter(|(k, _)| start.as_ref().is_none_or(|s| *k > s))
        .map(|(_, e)| e)
        .take(max + 1)
        .collect();
    let more = page.len() > max;
    page.truncate(max);
    let body = serde_json::json!({"paths": page.iter().map(|e| e.json()).collect::<Vec<_>>()});
    let mut resp = Response::new(200)
        .with("Content-Type", "application/json;charset=utf-8")
        .with_body(body.to_string().into_bytes());
    if more && let Some(last) = page.last() {
        resp.set("x-ms-continuation", hex(&last.name));
    }
    Ok(resp)
}
