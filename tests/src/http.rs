//! A minimal HTTP/1.1 GET for the tests (keeper endpoints, `/metrics`,
//! Prometheus's API), to 127.0.0.1 only: one request per connection,
//! `Connection: close`, body read to the end (chunked bodies decoded).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on one request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer: status code and body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

/// `GET path_and_query` from 127.0.0.1:`port`.
pub async fn get(port: u16, path_and_query: &str) -> Result<HttpReply> {
    tokio::time::timeout(HTTP_TIMEOUT, get_inner(port, path_and_query))
        .await
        .map_err(|_| {
            anyhow!("GET 127.0.0.1:{port}{path_and_query} took longer than {HTTP_TIMEOUT:?}")
        })?
}

async fn get_inner(port: u16, path_and_query: &str) -> Result<HttpReply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_reply(&raw)
        .with_context(|| format!("reading the answer to GET 127.0.0.1:{port}{path_and_query}"))
}

fn parse_reply(raw: &[u8]) -> Result<HttpReply> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(HttpReply {
        status,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size_text = String::from_utf8_lossy(&body[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[(size + 2).min(body.len())..];
    }
}

/// Percent-encode a query-string value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed() {
        let r = parse_reply(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}")
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "{}"));
        let r = parse_reply(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "abcde"));
        assert!(parse_reply(b"garbage").is_err());
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("up{job=\"x\"}"), "up%7Bjob%3D%22x%22%7D");
    }
}
