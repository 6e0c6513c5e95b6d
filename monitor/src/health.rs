//! The monitor's own check of each node's PostgreSQL, like libpq's PQping:
//! open a connection, send a startup packet, and call the server healthy
//! when it answers with authentication (or any error other than "cannot
//! connect now"). No credentials are needed and nothing is queried.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::fsm::Health;
use crate::store::Store;

/// Check one server.
pub async fn ping(host: &str, port: u16, user: &str, limit: Duration) -> Health {
    match timeout(limit, ping_inner(host, port, user)).await {
        Ok(Ok(true)) => Health::Good,
        _ => Health::Bad,
    }
}

async fn ping_inner(host: &str, port: u16, user: &str) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect((host, port)).await?;
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes()); // protocol 3.0
    for (k, v) in [
        ("user", user),
        ("database", "postgres"),
        ("application_name", "pgpilot_health"),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    stream.write_all(&packet).await?;
    let kind = stream.read_u8().await?;
    match kind {
        b'R' => {
            // Authentication request or ok: the server accepts connections.
            // Say goodbye properly so the server logs nothing.
            let _ = stream.write_all(&[b'X', 0, 0, 0, 4]).await;
            Ok(true)
        }
        b'E' => {
            let len = stream.read_i32().await?;
            let mut payload = vec![0u8; (len.max(4) - 4).min(8192) as usize];
            stream.read_exact(&mut payload).await?;
            Ok(sqlstate(&payload).as_deref() != Some("57P03"))
        }
        _ => Ok(false),
    }
}

/// The SQLSTATE ('C' field) of an ErrorResponse body.
fn sqlstate(payload: &[u8]) -> Option<String> {
    payload
        .split(|b| *b == 0)
        .find(|field| field.first() == Some(&b'C'))
        .map(|field| String::from_utf8_lossy(&field[1..]).into_owned())
}

/// Health results stored at once: each is a short locked transaction
/// that evaluates the node's group.
const STORES_AT_ONCE: usize = 8;

/// Check every node once; store changes (which re-evaluate the group)
/// while the lease is held with `lease`. Each result is stored as soon as
/// its check ends, a few at a time, so a failed primary is not kept
/// waiting behind the first checks of thousands of new nodes.
pub async fn check_all(store: &Store, lease: i64, limit: Duration, user: &str) {
    let targets = match store.health_targets().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "health check: cannot list nodes");
            return;
        }
    };
    let mut checks = tokio::task::JoinSet::new();
    for (id, host, port, before) in targets {
        let user = user.to_string();
        checks.spawn(async move {
            let now = ping(&host, port, &user, limit).await;
            crate::metrics::health_checked(now);
            (id, host, port, before, now)
        });
    }
    let mut stores = tokio::task::JoinSet::new();
    let mut first_passed = Vec::new();
    while let Some(checked) = checks.join_next().await {
        let Ok((id, host, port, before, now)) = checked else {
            continue;
        };
        if before == now {
            continue;
        }
        if (before, now) == (Health::Unknown, Health::Good) {
            // Decides nothing: stored together at the end.
            first_passed.push(id);
            continue;
        }
        tracing::info!(node_id = id, %host, port, health = now.as_str(), "health check changed");
        while stores.len() >= STORES_AT_ONCE {
            stores.join_next().await;
        }
        let store = store.clone();
        stores.spawn(async move {
            if let Err(e) = store.set_health(id, now, lease).await {
                tracing::warn!(error = %e, node_id = id, "cannot store health check result");
            }
        });
    }
    while stores.join_next().await.is_some() {}
    if !first_passed.is_empty() {
        match store.first_checks_passed(&first_passed, lease).await {
            Ok(n) => tracing::info!(nodes = n, "first health checks passed"),
            Err(e) => {
                tracing::warn!(error = %e, nodes = first_passed.len(), "cannot store first health checks")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlstate() {
        let body = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0";
        assert_eq!(sqlstate(body).as_deref(), Some("57P03"));
        assert_eq!(sqlstate(b"SFATAL\0\0"), None);
    }

    #[tokio::test]
    async fn closed_port_is_bad() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        assert_eq!(
            ping("127.0.0.1", port, "postgres", Duration::from_secs(1)).await,
            Health::Bad
        );
    }

    #[tokio::test]
    async fn silent_server_times_out_as_bad() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _accept = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let started = std::time::Instant::now();
        assert_eq!(
            ping("127.0.0.1", port, "postgres", Duration::from_millis(200)).await,
            Health::Bad
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn auth_request_is_good() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let len = s.read_i32().await.unwrap();
            let mut rest = vec![0u8; len as usize - 4];
            s.read_exact(&mut rest).await.unwrap();
            s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]).await.unwrap();
        });
        assert_eq!(
            ping("127.0.0.1", port, "postgres", Duration::from_secs(1)).await,
            Health::Good
        );
    }
}
