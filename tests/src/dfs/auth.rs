//! Shared Key for the DFS endpoint: the string-to-sign of the Blob and Data Lake services
//! ("Authorize with Shared Key", version 2015-02-21 and later), used both to verify what a
//! client sends to the DFS listener and to sign what the endpoint sends on to Azurite with
//! the well-known Azurite key. Azurite's path-style addressing makes the canonicalized
//! resource `/devstoreaccount1/devstoreaccount1/...` (account, then the URL path).

use base64::Engine;

use super::wire::{Request, decode, parse_query};
use crate::{AZURITE_ACCOUNT, AZURITE_KEY};

/// What a request's `Authorization` (or query) says about its caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A Shared Key signature that matches.
    SharedKey,
    /// A bearer token or a SAS: accepted without verification (documented).
    Unverified,
    /// A Shared Key signature that does not match, or a foreign account.
    Bad,
    /// No credentials at all.
    Missing,
}

/// The string-to-sign for `method` on `raw_path` (percent-encoded, as sent) with `query`
/// (decoded pairs) and `headers` (lower-case names).
pub fn string_to_sign(
    method: &str,
    raw_path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
) -> String {
    let h = |name: &str| super::wire::header(headers, name).unwrap_or("").to_string();
    let length = h("content-length");
    let length = if length == "0" { String::new() } else { length };
    let mut xms: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    xms.sort();
    let canon_headers: String = xms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let mut names: Vec<String> = query.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let mut canon_query = String::new();
    for n in names {
        let mut vals: Vec<&str> = query
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase() == n)
            .map(|(_, v)| v.as_str())
            .collect();
        vals.sort();
        canon_query.push_str(&format!("\n{n}:{}", vals.join(",")));
    }
    format!(
        "{method}\n{}\n{}\n{length}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{canon_headers}/{AZURITE_ACCOUNT}{raw_path}{canon_query}",
        h("content-encoding"),
        h("content-language"),
        h("content-md5"),
        h("content-type"),
        h("date"),
        h("if-modified-since"),
        h("if-match"),
        h("if-none-match"),
        h("if-unmodified-since"),
        h("range"),
    )
}

/// The Shared Key signature of `string_to_sign` with the Azurite key.
pub fn signature(string_to_sign: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .unwrap_or_default();
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&k, string_to_sign.as_bytes()))
}

/// Judge a request to the DFS listener. The signature is checked over the path as sent
/// and, failing that, over the percent-decoded path (clients differ on which they sign).
pub fn verify(req: &Request) -> Verdict {
    let Some(auth) = req.header("authorization") else {
        let q = req.query();
        return if q.iter().any(|(k, _)| k == "sig") {
            Verdict::Unverified
        } else {
            Verdict::Missing
        };
    };
    if auth.starts_with("Bearer ") {
        return Verdict::Unverified;
    }
    let Some(rest) = auth.strip_prefix("SharedKey ") else {
        return Verdict::Bad;
    };
    let Some((account, sig)) = rest.split_once(':') else {
        return Verdict::Bad;
    };
    if account != AZURITE_ACCOUNT {
        return Verdict::Bad;
    }
    let query = req.query();
    let raw = req.raw_path();
    let candidates = [raw.to_string(), decode(raw)];
    let ok = candidates.iter().any(|p| {
        let expected = signature(&string_to_sign(&req.method, p, &query, &req.headers));
        expected == sig.trim()
    });
    if ok { Verdict::SharedKey } else { Verdict::Bad }
}

/// Sign `req` (target already final) for Azurite: adds `x-ms-date`, `x-ms-version` and
/// `Authorization`, replacing any the client sent.
pub fn sign_upstream(req: &mut Request) {
    req.headers.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "authorization" | "x-ms-date" | "x-ms-version" | "date"
        )
    });
    req.headers.push((
        "x-ms-date".into(),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    ));
    req.headers
        .push(("x-ms-version".into(), "2021-08-06".into()));
    req.headers.retain(|(k, _)| k != "content-length");
    if !req.body.is_empty() {
        req.headers
            .push(("content-length".into(), req.body.len().to_string()));
    }
    let query = req
        .target
        .split_once('?')
        .map(|(_, q)| parse_query(q))
        .unwrap_or_default();
    let sts = string_to_sign(&req.method, req.raw_path(), &query, &req.headers);
    let auth = format!("SharedKey {AZURITE_ACCOUNT}:{}", signature(&sts));
    req.headers.push(("authorization".into(), auth));
}
