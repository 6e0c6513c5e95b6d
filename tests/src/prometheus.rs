//! A real Prometheus (Debian's `prometheus`) for the tests: started on a
//! free 127.0.0.1 port with its own configuration and storage in a
//! temporary directory, scraping the given targets every second; killed
//! when dropped.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::http;
use crate::process::free_port;
use crate::wait::{poll_until, GiveUp};

/// Environment variable naming the `prometheus` program (default: on PATH).
pub const PROMETHEUS_ENV: &str = "PGPILOT_PROMETHEUS";

/// How long Prometheus gets to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// One scrape job: its name and `127.0.0.1` ports.
pub struct Job<'a> {
    pub name: &'a str,
    pub ports: Vec<u16>,
}

impl Prometheus {
    /// Start Prometheus scraping `jobs` every second and wait until it is ready.
    pub async fn start(jobs: &[Job<'_>]) -> Result<Prometheus> {
        let program = std::env::var(PROMETHEUS_ENV).unwrap_or_else(|_| "prometheus".into());
        let dir = tempfile::Builder::new()
            .prefix("pgpilot-prometheus-")
            .tempdir()
            .context("creating a directory for Prometheus")?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for job in jobs {
            let targets: Vec<String> = job
                .ports
                .iter()
                .map(|p| format!("\"127.0.0.1:{p}\""))
                .collect();
            config.push_str(&format!(
                "  - job_name: {}\n    static_configs:\n      - targets: [{}]\n",
                job.name,
                targets.join(", ")
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        fs::write(&config_path, config).context("writing prometheus.yml")?;
        let log = dir.path().join("prometheus.log");
        let mut last = None;
        for _attempt in 0..3 {
            let port = free_port()?;
            let out = fs::File::create(&log).context("creating prometheus.log")?;
            let mut child = Command::new(&program)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--storage.tsdb.retention.time=1h")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| {
                    format!(
                        "starting {program} (install Debian's prometheus with scripts/setup.sh, or set {PROMETHEUS_ENV})"
                    )
                })?;
            match wait_ready(&mut child, port).await {
                Ok(()) => {
                    return Ok(Prometheus {
                        child,
                        port,
                        log,
                        _dir: dir,
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    let e = e.context(format!("Prometheus log:\n{text}"));
                    if !text.contains("address already in use") {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("Prometheus did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Prometheus's own log.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query: the `result` array (an error when Prometheus
    /// refuses the query).
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let reply = http::get(
            self.port,
            &format!("/api/v1/query?query={}", http::encode(promql)),
        )
        .await?;
        let json: Value = serde_json::from_str(&reply.body)
            .with_context(|| format!("Prometheus answered {} {:?}", reply.status, reply.body))?;
        if json["status"] != "success" {
            bail!(
                "Prometheus refused {promql:?}: {} {}",
                json["errorType"].as_str().unwrap_or(""),
                json["error"].as_str().unwrap_or(&reply.body)
            );
        }
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The value of a query that returns one sample (None when it returns none).
    pub async fn value(&self, promql: &str) -> Result<Option<f64>> {
        let result = self.query(promql).await?;
        match result.as_slice() {
            [] => Ok(None),
            [one] => one["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .map(Some)
                .ok_or_else(|| anyhow!("no value in {one}")),
            many => bail!(
                "{promql:?} returned {} series, expected one: {many:?}",
                many.len()
            ),
        }
    }

    /// Scrape targets and their health, one line each.
    pub async fn targets(&self) -> String {
        match http::get(self.port, "/api/v1/targets").await {
            Ok(r) => {
                let json: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                json["data"]["activeTargets"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|t| {
                                format!(
                                    "{} {} {}",
                                    t["scrapeUrl"].as_str().unwrap_or("?"),
                                    t["health"].as_str().unwrap_or("?"),
                                    t["lastError"].as_str().unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_else(|| r.body)
            }
            Err(e) => format!("cannot list targets: {e:#}"),
        }
    }
}

/// Wait until Prometheus answers /-/ready; give up at once if it exits.
async fn wait_ready(child: &mut Child, port: u16) -> Result<()> {
    let child = std::sync::Mutex::new(child);
    let child = &child;
    poll_until(READY_TIMEOUT, "Prometheus to be ready", || async move {
        if let Some(status) = child.lock().map_err(|_| anyhow!("poisoned"))?.try_wait()? {
            return Err(GiveUp(format!("prometheus exited ({status})")).into());
        }
        let r = http::get(port, "/-/ready").await?;
        Ok((r.status == 200).then_some(()))
    })
    .await
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
