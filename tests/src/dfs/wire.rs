//! HTTP/1.1 messages for the DFS endpoint: reading a whole request from a client connection,
//! reading a whole response from Azurite, and writing either back out. Bodies are held in
//! memory (test-sized data); chunked bodies are de-chunked and re-sent with a
//! `Content-Length`. Also the percent-coding and query parsing both listeners share.

use std::io::{BufRead, BufReader, Read, Write};

/// One request as received (header names lower-cased, values trimmed).
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    /// The request target as sent (`/path?query`, still percent-encoded).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The target's path, still percent-encoded.
    pub fn raw_path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The target's query as decoded `(name, value)` pairs, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        self.target
            .split_once('?')
            .map(|(_, q)| parse_query(q))
            .unwrap_or_default()
    }

    /// The first value of query parameter `name` (names compared case-sensitively, as
    /// Azure does for its own parameters).
    pub fn q(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// `METHOD target`, as logged.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }
}

/// One response (header names as given; `content-length` is added on write unless the
/// response is to a HEAD and already carries one).
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            ..Response::default()
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Add (or replace) a header.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Response {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn with(mut self, name: &str, value: impl Into<String>) -> Response {
        self.set(name, value);
        self
    }

    /// The Azure error code of a failed upstream answer (`x-ms-error-code`, else the XML
    /// body's `<Code>`).
    pub fn error_code(&self) -> String {
        if let Some(c) = self.header("x-ms-error-code") {
            return c.to_string();
        }
        let text = String::from_utf8_lossy(&self.body);
        xml_first(&text, "Code").unwrap_or_default()
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Read one request; `None` at a clean end of stream.
pub fn read_request<R: Read>(r: &mut BufReader<R>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(std::io::ErrorKind::InvalidData.into());
    };
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        ..Request::default()
    };
    req.headers = read_headers(r)?;
    req.body = read_body(r, &req.headers, true)?;
    Ok(Some(req))
}

/// Read one response to a request made with `method`.
pub fn read_response<R: Read>(r: &mut BufReader<R>, method: &str) -> std::io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let headers = read_headers(r)?;
    let body = if method == "HEAD" || status == 204 || status == 304 || status < 200 {
        Vec::new()
    } else {
        read_body(r, &headers, false)?
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn read_headers<R: Read>(r: &mut BufReader<R>) -> std::io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let t = line.trim_end();
        if t.is_empty() {
            return Ok(headers);
        }
        if let Some((k, v)) = t.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
}

/// A body framed by `Content-Length` or chunked; a response with neither runs to the end
/// of the stream (`request` bodies without either are empty).
fn read_body<R: Read>(
    r: &mut BufReader<R>,
    headers: &[(String, String)],
    request: bool,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let chunked = header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut line = String::new();
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            if size == 0 {
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                return Ok(body);
            }
            r.by_ref().take(size).read_to_end(&mut body)?;
            line.clear();
            r.read_line(&mut line)?;
        }
    }
    match header(headers, "content-length").and_then(|v| v.parse::<u64>().ok()) {
        Some(n) => {
            r.by_ref().take(n).read_to_end(&mut body)?;
            if (body.len() as u64) < n {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        None if !request => {
            r.read_to_end(&mut body)?;
        }
        None => {}
    }
    Ok(body)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Status",
    }
}

/// Write `resp` to a client; `head` when it answers a HEAD (no body; a `Content-Length` it
/// carries is the resource's and is kept).
pub fn write_response(w: &mut impl Write, resp: &Response, head: bool) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    let keep_length = head && resp.header("content-length").is_some();
    for (k, v) in &resp.headers {
        let lk = k.to_ascii_lowercase();
        if lk == "transfer-encoding"
            || lk == "connection"
            || (lk == "content-length" && !keep_length)
        {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !keep_length {
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    out.push_str("\r\n");
    w.write_all(out.as_bytes())?;
    if !head {
        w.write_all(&resp.body)?;
    }
    w.flush()
}

/// Write a request to an upstream server (Azurite) over a connection used once.
pub fn write_request(w: &mut impl Write, req: &Request, host: &str) -> std::io::Result<()> {
    let mut out = format!("{} {} HTTP/1.1\r\nHost: {host}\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        if matches!(
            k.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding" | "expect"
        ) {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    w.write_all(out.as_bytes())?;
    w.write_all(&req.body)?;
    w.flush()
}

/// Percent-decode (`+` kept as is: paths).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'%'));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encode everything but RFC 3986 unreserved characters (and `/` when `keep_slash`).
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decode a query string form-style (`+` is a space, as URL libraries that sign requests
/// read it).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
        })
        .collect()
}

/// XML-unescape the five predefined entities (and numeric ones).
pub fn xml_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find(';') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let ent = &rest[i + 1..i + end];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => out.push(c),
            None => out.push_str(&rest[i..=i + end]),
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    out
}

/// The text of the first `<tag>...</tag>` in `xml`, unescaped.
pub fn xml_first(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml_unescape(&xml[start..end]))
}

/// Every `<tag>...</tag>` element's inner text (not unescaped) in `xml`, in order.
pub fn xml_all<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(s) = rest.find(&open) {
        let body = &rest[s + open.len()..];
        let Some(e) = body.find(&close) else { break };
        out.push(&body[..e]);
        rest = &body[e + close.len()..];
    }
    out
}
