//! The monitors a keeper may talk to (the `monitor` setting: one URL or
//! a list, read and checked here for the configuration), which one is in
//! use, and when it moves on.
//!
//! Every monitor of a list serves the same state (they share one
//! database), so the keeper talks to one at a time and stays with it while
//! it answers. A call that fails in a way the keeper retries moves the
//! next call to the next monitor of the list, round robin: the loop's next
//! heartbeat, a keepalive's or a registration retry — whichever comes
//! first — so the keeper reaches another monitor within one heartbeat
//! interval of an error. There is no going back to a preferred monitor:
//! the one that answers is kept.
//!
//! [`check_urls`] and [`Rotation`] are the pure parts (which monitor, what failed since one
//! last answered), tested below; [`Monitors`] shares it between the loop's
//! client and the keepalives, keeps a lazy gRPC client per monitor, and
//! reports the monitor in use to the log, the status and the metrics.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pgpilot_proto::security;

use crate::config::KeeperConfig;
use crate::error::KeeperError;
use crate::status::{self, SharedStatus};

/// `monitor`: one URL, or a list of them; anything else is refused in
/// one sentence naming the key.
pub fn deserialize_urls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let example =
        "monitor = \"https://m1:7430\" or monitor = [\"https://m1:7430\", \"https://m2:7430\"]";
    let a = |v: &toml::Value| match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    };
    match <toml::Value as serde::Deserialize>::deserialize(d)? {
        toml::Value::String(url) => Ok(vec![url]),
        toml::Value::Array(values) => values
            .into_iter()
            .map(|v| match v {
                toml::Value::String(url) => Ok(url),
                other => Err(serde::de::Error::custom(format!(
                    "monitor lists {} where a URL string belongs: write {example}",
                    a(&other)
                ))),
            })
            .collect(),
        other => Err(serde::de::Error::custom(format!(
            "monitor is {} where a URL or a list of URLs belongs: write {example}",
            a(&other)
        ))),
    }
}

/// A monitor URL as compared for duplicates: two spellings of one monitor
/// (case of scheme and host, a trailing slash) are the same.
fn monitor_key(url: &str) -> String {
    url.trim_end_matches('/').to_ascii_lowercase()
}

/// The `monitor` URLs, checked: at least one, each http:// or https://,
/// all of one scheme, none twice, and the TLS settings (`security`) fit
/// for every one. A refusal is one sentence.
pub fn check_urls(urls: &[String], security: &security::ClientSecurity) -> Result<(), String> {
    let Some(first) = urls.first() else {
        return Err("monitor is an empty list: give the URL of at least one monitor, e.g. monitor = [\"https://m1:7430\", \"https://m2:7430\"]".into());
    };
    if let Some(url) = urls
        .iter()
        .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
    {
        return Err(format!(
            "monitor {url:?} must be a URL like https://127.0.0.1:7430"
        ));
    }
    let tls = |u: &str| u.starts_with("https://");
    if let Some(other) = urls.iter().find(|u| tls(u) != tls(first)) {
        return Err(format!(
            "monitor mixes http:// and https:// ({first:?} and {other:?}): give every monitor https:// (or every one http://, when they all run with plaintext = true)"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(url) = urls.iter().find(|u| !seen.insert(monitor_key(u))) {
        return Err(format!(
            "monitor {url:?} is listed twice: list each monitor once"
        ));
    }
    for url in urls {
        security
            .check(url, &security::CONFIG_NAMES)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Which monitor of the list is in use, and which failed since one last
/// answered. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    urls: Vec<String>,
    current: usize,
    /// Per monitor: it failed since a monitor last answered.
    failed: Vec<bool>,
}

/// What one failed call changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The next call goes elsewhere: the positions of the monitor left and
    /// of the one in use now.
    pub switch: Option<(usize, usize)>,
    /// Every monitor of the list failed since one last answered.
    pub all: bool,
}

impl Rotation {
    /// Starts with the first monitor of the list; None for an empty list.
    pub fn new(urls: Vec<String>) -> Option<Self> {
        if urls.is_empty() {
            return None;
        }
        let failed = vec![false; urls.len()];
        Some(Rotation {
            urls,
            current: 0,
            failed,
        })
    }

    /// The monitor in use: its position in the list and its URL.
    pub fn current(&self) -> (usize, &str) {
        (self.current, &self.urls[self.current])
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// A monitor answered: every monitor gets a fresh chance.
    pub fn answered(&mut self) {
        self.failed.fill(false);
    }

    /// The call to the monitor at `index` failed. When that monitor is
    /// still the one in use, the next call goes to the next one of the
    /// list; a call that was already moved away from (a keepalive and the
    /// loop failing on the same monitor) moves nothing.
    pub fn failed(&mut self, index: usize) -> Failed {
        if let Some(flag) = self.failed.get_mut(index) {
            *flag = true;
        }
        let switch = (index == self.current && self.urls.len() > 1).then(|| {
            let from = self.current;
            self.current = (self.current + 1) % self.urls.len();
            (from, self.current)
        });
        Failed {
            switch,
            all: self.failed.iter().all(|f| *f),
        }
    }

    /// The error for a failed call to `url`: it names every monitor of
    /// the list once all of them failed since one last answered.
    pub fn unreachable(&self, url: &str, reason: String, failed: &Failed) -> KeeperError {
        KeeperError::MonitorUnreachable {
            url: url.to_string(),
            reason,
            tried: if failed.all && self.urls.len() > 1 {
                self.urls.clone()
            } else {
                Vec::new()
            },
        }
    }
}

/// How the error of an unreachable monitor names it: the one tried, or
/// every one of the list (in its order, so that the sentence stays the
/// same while they all keep failing) once all of them failed.
pub fn describe_unreachable(url: &str, tried: &[String]) -> String {
    if tried.is_empty() {
        format!("the monitor at {url}")
    } else {
        format!("any of the monitors {}", tried.join(", "))
    }
}

/// The monitor in use, as a call takes it.
pub struct InUse {
    /// Its position in the list, to report the call's failure with.
    pub index: usize,
    pub url: String,
    pub client: security::Client,
}

/// The monitors, shared by the loop's client and the keepalives (clones
/// share the monitor in use).
#[derive(Clone)]
pub struct Monitors {
    shared: Arc<Shared>,
}

struct Shared {
    security: security::ClientSecurity,
    rpc_timeout: Duration,
    status: SharedStatus,
    state: Mutex<State>,
}

struct State {
    rotation: Rotation,
    /// A lazy client per monitor, built at [`Monitors::connect`] (or on
    /// first use).
    clients: Vec<Option<security::Client>>,
}

impl Monitors {
    /// The configured monitors, the first in use; `status` is told which.
    pub fn new(config: &KeeperConfig, status: SharedStatus) -> Result<Self, KeeperError> {
        let rotation = Rotation::new(config.monitors.clone()).ok_or_else(|| {
            KeeperError::Security(
                "no monitor URL is configured: set monitor = \"https://HOST:7430\" (or a list of them)"
                    .to_string(),
            )
        })?;
        {
            let mut s = status::lock(&status);
            s.monitors = rotation.urls().to_vec();
            s.monitor = Some(rotation.current().1.to_string());
        }
        Ok(Monitors {
            shared: Arc::new(Shared {
                security: config.client_security(),
                rpc_timeout: crate::client::rpc_timeout(config),
                status,
                state: Mutex::new(State {
                    clients: vec![None; rotation.urls().len()],
                    rotation,
                }),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every field is written whole: a panic elsewhere leaves it usable.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Build a client of every monitor now: reads the TLS files and the
    /// token once, so that a world-readable key or token file, or a URL
    /// that is no URL, is refused at start. Says which monitor is in use.
    pub fn connect(&self) -> Result<(), KeeperError> {
        let mut state = self.state();
        let urls = state.rotation.urls().to_vec();
        if security::url_uses_tls(&urls[0]) == Some(false) {
            tracing::warn!(monitors = %urls.join(","), "talking to the monitor in plaintext (http://): anyone on the network can read and forge this node's heartbeats; use https://");
        }
        for (slot, url) in state.clients.iter_mut().zip(&urls) {
            *slot = Some(self.build(url)?);
        }
        let (_, url) = state.rotation.current();
        tracing::info!(monitor = %url, monitors = %urls.join(","), "talking to monitor {url}");
        Ok(())
    }

    fn build(&self, url: &str) -> Result<security::Client, KeeperError> {
        let rpc_timeout = self.shared.rpc_timeout;
        self.shared
            .security
            .lazy_client(url, &security::CONFIG_NAMES, |e| {
                e.connect_timeout(Duration::from_secs(1))
                    .timeout(rpc_timeout)
            })
            .map_err(|e| KeeperError::Security(e.to_string()))
    }

    /// The monitor the next call goes to.
    pub fn current(&self) -> Result<InUse, KeeperError> {
        let mut state = self.state();
        let (index, url) = state.rotation.current();
        let url = url.to_string();
        let client = match state.clients[index].clone() {
            Some(client) => client,
            None => {
                let client = self.build(&url)?;
                state.clients[index] = Some(client.clone());
                client
            }
        };
        Ok(InUse { index, url, client })
    }

    /// A monitor answered.
    pub fn answered(&self) {
        self.state().rotation.answered();
    }

    /// The call to `in_use` failed with `reason`, an error the keeper
    /// retries: move the next call on (logged, counted, shown in the
    /// status).
    pub fn failed(&self, in_use: &InUse, reason: &str) -> Failed {
        let (failed, next) = {
            let mut state = self.state();
            let failed = state.rotation.failed(in_use.index);
            let next = failed
                .switch
                .map(|(_, to)| state.rotation.urls()[to].clone());
            (failed, next)
        };
        if let Some(next) = next {
            tracing::info!(monitor = %next, previous = %in_use.url, error = %reason, "talking to monitor {next}");
            crate::metrics::monitor_switched();
            status::lock(&self.shared.status).monitor = Some(next);
        }
        failed
    }

    /// The error for the failed call to `in_use` (see [`Rotation::unreachable`]).
    pub fn unreachable(&self, in_use: &InUse, reason: String, failed: &Failed) -> KeeperError {
        self.state()
            .rotation
            .unreachable(&in_use.url, reason, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(n: usize) -> Rotation {
        Rotation::new((1..=n).map(|i| format!("https://m{i}:7430")).collect()).unwrap()
    }

    #[test]
    fn an_empty_list_has_no_rotation() {
        assert_eq!(Rotation::new(Vec::new()), None);
    }

    #[test]
    fn failures_move_round_robin_and_answers_keep_the_monitor() {
        let mut r = rotation(3);
        assert_eq!(r.current(), (0, "https://m1:7430"));
        let mut order = Vec::new();
        for _ in 0..4 {
            let (i, _) = r.current();
            let f = r.failed(i);
            assert_eq!(f.switch, Some((i, r.current().0)));
            order.push(r.current().0);
        }
        assert_eq!(order, [1, 2, 0, 1], "round robin, wrapping");
        r.answered();
        assert_eq!(r.current().0, 1, "an answer keeps the monitor in use");
        r.answered();
        assert_eq!(r.current().0, 1);
    }

    #[test]
    fn a_failure_of_a_monitor_already_left_moves_nothing() {
        let mut r = rotation(3);
        // A keepalive and the loop both fail on m1: one move, not two.
        assert_eq!(r.failed(0).switch, Some((0, 1)));
        assert_eq!(r.failed(0).switch, None);
        assert_eq!(r.current().0, 1);
        // An index past the list changes nothing either.
        assert_eq!(r.failed(7).switch, None);
        assert_eq!(r.current().0, 1);
    }

    #[test]
    fn one_monitor_stays_in_use() {
        let mut r = rotation(1);
        let f = r.failed(0);
        assert_eq!(
            f,
            Failed {
                switch: None,
                all: true
            }
        );
        assert_eq!(r.current(), (0, "https://m1:7430"));
        let err = r.unreachable("https://m1:7430", "timeout".into(), &f);
        assert_eq!(
            err.to_string(),
            "cannot reach the monitor at https://m1:7430: timeout"
        );
    }

    #[test]
    fn the_error_names_every_monitor_once_all_failed() {
        let mut r = rotation(2);
        let f = r.failed(0);
        assert!(!f.all);
        let err = r.unreachable("https://m1:7430", "refused".into(), &f);
        assert_eq!(
            err.to_string(),
            "cannot reach the monitor at https://m1:7430: refused"
        );
        let f = r.failed(1);
        assert!(f.all);
        let err = r.unreachable("https://m2:7430", "timeout".into(), &f);
        assert_eq!(
            err.to_string(),
            "cannot reach any of the monitors https://m1:7430, https://m2:7430: timeout"
        );
        // The sentence stays the same while they keep failing.
        let f = r.failed(0);
        let again = r.unreachable("https://m1:7430", "timeout".into(), &f);
        assert_eq!(again.to_string(), err.to_string());
        // One answer, and the next failure names one monitor again.
        r.answered();
        let f = r.failed(1);
        assert!(!f.all);
    }
}
