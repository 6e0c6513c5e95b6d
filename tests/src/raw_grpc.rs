//! gRPC calls written by hand on HTTP/2 (`h2`), for what no generated
//! client can send: a body that is no protobuf message, broken gRPC
//! framing (a compressed flag without an encoding, a length longer than
//! the data, two messages to a unary method), another content type, an
//! unknown method. Plaintext (`http://`) monitors only.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request: `path` is `/pgpilot.v1.Monitor/RegisterNode` or any other;
/// `body` is sent as it is (see [`frame`] for a well-framed message).
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub path: String,
    /// `None`: no content-type header at all.
    pub content_type: Option<String>,
    /// Extra request headers (e.g. `grpc-encoding`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// A request to `method` of the monitor service with `body` and the
    /// headers a gRPC client sends.
    pub fn grpc(method: &str, body: Vec<u8>) -> RawRequest {
        RawRequest {
            path: format!("/pgpilot.v1.Monitor/{method}"),
            content_type: Some("application/grpc".to_string()),
            headers: Vec::new(),
            body,
        }
    }
}

/// How the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawAnswer {
    /// A gRPC status, from the headers of a trailers-only answer or from
    /// the trailers; `message` is percent-decoded.
    Status {
        http_status: u16,
        code: tonic::Code,
        message: String,
    },
    /// An HTTP answer that carries no `grpc-status`.
    Http { status: u16 },
    /// The server reset the stream or closed the connection: what h2 said.
    Reset(String),
}

/// `message` in gRPC's length-prefixed framing (not compressed).
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Send `request` on a new HTTP/2 connection to `addr` and read the answer
/// within `timeout`.
pub async fn call(addr: SocketAddr, request: &RawRequest, timeout: Duration) -> Result<RawAnswer> {
    tokio::time::timeout(timeout, call_inner(addr, request))
        .await
        .map_err(|_| anyhow!("no answer within {timeout:?} to {}", request.path))?
}

async fn call_inner(addr: SocketAddr, request: &RawRequest) -> Result<RawAnswer> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (client, connection) = match h2::client::handshake(tcp).await {
        Ok(pair) => pair,
        Err(e) => return Ok(RawAnswer::Reset(format!("handshake: {e}"))),
    };
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let answer = exchange(client, addr, request).await;
    driver.abort();
    answer
}

async fn exchange(
    client: h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    request: &RawRequest,
) -> Result<RawAnswer> {
    let mut client = match client.ready().await {
        Ok(c) => c,
        Err(e) => return Ok(RawAnswer::Reset(format!("connection: {e}"))),
    };
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{}", request.path))
        .header("te", "trailers");
    if let Some(ct) = &request.content_type {
        builder = builder.header("content-type", ct);
    }
    for (k, v) in &request.headers {
        builder = builder.header(k, v);
    }
    let head = builder.body(()).context("building the request head")?;
    let (response, mut stream) = match client.send_request(head, request.body.is_empty()) {
        Ok(pair) => pair,
        Err(e) => return Ok(RawAnswer::Reset(format!("send: {e}"))),
    };
    // Buffered by h2 and sent as the server's flow-control window allows.
    // A server that answers from the head alone (an unknown grpc-encoding)
    // may close the stream before the body goes out: its answer counts.
    let send_error = if request.body.is_empty() {
        None
    } else {
        stream
            .send_data(Bytes::from(request.body.clone()), true)
            .err()
    };
    let response = match response.await {
        Ok(r) => r,
        Err(e) => {
            return Ok(RawAnswer::Reset(match send_error {
                Some(s) => format!("send data: {s}; response: {e}"),
                None => format!("response: {e}"),
            }))
        }
    };
    let http_status = response.status().as_u16();
    if let Some(answer) = status_in(response.headers(), http_status) {
        return Ok(answer);
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            Err(e) => return Ok(RawAnswer::Reset(format!("response body: {e}"))),
        }
    }
    match body.trailers().await {
        Ok(Some(trailers)) => Ok(
            status_in(&trailers, http_status).unwrap_or(RawAnswer::Http {
                status: http_status,
            }),
        ),
        Ok(None) => Ok(RawAnswer::Http {
            status: http_status,
        }),
        Err(e) => Ok(RawAnswer::Reset(format!("trailers: {e}"))),
    }
}

fn status_in(headers: &http::HeaderMap, http_status: u16) -> Option<RawAnswer> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    Some(RawAnswer::Status {
        http_status,
        code: tonic::Code::from(code),
        message,
    })
}

fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Write `bytes` on a new TCP connection to `addr` (no HTTP/2 handshake
/// unless the bytes hold one), then read until the server closes the
/// connection or `timeout` passes; returns whether the server closed it.
pub async fn send_bytes(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Result<bool> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    // The server may close the connection before everything is written.
    let _ = tcp.write_all(bytes).await;
    let mut sink = [0u8; 4096];
    let closed = tokio::time::timeout(timeout, async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_messages() {
        assert_eq!(frame(b"ab"), vec![0, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(percent_decode(b"a%20b%"), "a b%");
        assert_eq!(percent_decode(b"100%25"), "100%");
    }
}
