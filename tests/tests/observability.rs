//! Observability end to end: the keeper's HTTP endpoints before and after a
//! failover, a real Prometheus scraping a real cluster and answering every
//! panel query of the shipped Grafana dashboards, `show-events` after a
//! failover, and no secret in any log.
//!
//! Needs `cargo build --workspace` first, PostgreSQL's server programs, and
//! for the Prometheus test Debian's `prometheus` (scripts/setup.sh installs
//! it).

use std::time::Duration;

use anyhow::{anyhow, Result};
use pgpilot_tests::http::{self, HttpReply};
use pgpilot_tests::operator::cli_ok;
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState};

const SECONDARY: ReplicationState = ReplicationState::Secondary;

fn observed_cluster(nodes: usize) -> ClusterOptions {
    ClusterOptions {
        http: true,
        ..ClusterOptions::nodes(nodes)
    }
}

/// GET a keeper endpoint.
async fn keeper_get(cluster: &Cluster, node: &str, path: &str) -> Result<HttpReply> {
    http::get(cluster.keeper_http_port(node)?, path).await
}

/// Wait until every (node, path, status) holds at once.
async fn wait_endpoints(cluster: &Cluster, what: &str, expect: &[(&str, &str, u16)]) -> Result<()> {
    cluster
        .wait_for(Duration::from_secs(60), what, || async move {
            let mut wrong = Vec::new();
            for (node, path, status) in expect {
                match keeper_get(cluster, node, path).await {
                    Ok(r) if r.status == *status => {}
                    Ok(r) => wrong.push(format!(
                        "{node} {path}: {} {} (want {status})",
                        r.status,
                        r.body.trim()
                    )),
                    Err(e) => wrong.push(format!("{node} {path}: {e:#}")),
                }
            }
            if wrong.is_empty() {
                Ok(Some(()))
            } else {
                Err(anyhow!("{}", wrong.join("; ")))
            }
        })
        .await
}

/// /health, /primary, /replica[?lag], /read-only, /sync, /async,
/// /readiness and /liveness on a healthy pair, then after a planned
/// failover: the roles swap; a bad lag is a 400 with one sentence; a
/// standby with `noloadbalance = true` leaves every read pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeper_http_endpoints_follow_a_failover() -> Result<()> {
    let cluster = Cluster::start(observed_cluster(2)).await?;
    cluster.wait_healthy_pair().await?;
    let old = cluster.primary_name().await?;
    let new = cluster.other_node(&old)?;

    wait_endpoints(
        &cluster,
        &format!("{old} to answer as the primary and {new} as a replica"),
        &[
            (&old, "/health", 200),
            (&old, "/primary", 200),
            (&old, "/replica", 503),
            (&new, "/health", 200),
            (&new, "/primary", 503),
            (&new, "/replica", 200),
            (&new, "/replica?lag=16MB", 200),
            (&new, "/replica?lag=1048576", 200),
            (&old, "/read-only", 200),
            (&new, "/read-only", 200),
            // Two nodes run ANY 1 (the standby): the primary waits for it.
            (&new, "/sync", 200),
            (&new, "/async", 503),
            (&old, "/sync", 503),
            (&old, "/readiness", 200),
            (&new, "/readiness", 200),
            (&old, "/liveness", 200),
            (&new, "/liveness", 200),
        ],
    )
    .await?;
    let bad = keeper_get(&cluster, &new, "/sync?lag=lots").await?;
    if bad.status != 400 || !bad.body.contains("lag") {
        return Err(cluster
            .failure(format!(
                "/sync?lag=lots should be 400, got {} {:?}",
                bad.status, bad.body
            ))
            .await);
    }

    let body = keeper_get(&cluster, &old, "/primary").await?.body;
    let json: serde_json::Value = serde_json::from_str(&body)?;
    for key in ["state", "goal", "pg_running", "in_recovery", "lag_bytes"] {
        if json.get(key).is_none() {
            return Err(cluster
                .failure(format!("/primary body has no {key:?}: {body}"))
                .await);
        }
    }
    if json["pg_running"] != true || json["in_recovery"] != false {
        return Err(cluster
            .failure(format!("/primary body of {old}: {body}"))
            .await);
    }

    let bad = keeper_get(&cluster, &new, "/replica?lag=lots").await?;
    if bad.status != 400 || !bad.body.contains("lag") || bad.body.trim().contains('\n') {
        return Err(cluster
            .failure(format!(
                "/replica?lag=lots should be 400 with one sentence, got {} {:?}",
                bad.status, bad.body
            ))
            .await);
    }

    let metrics = keeper_get(&cluster, &old, "/metrics").await?;
    for needle in [
        "pgpilot_keeper_postgres_up 1",
        "# HELP pgpilot_keeper_postgres_up",
        "pgpilot_keeper_state{state=\"primary\"} 1",
    ] {
        if metrics.status != 200 || !metrics.body.contains(needle) {
            return Err(cluster
                .failure(format!(
                    "{old} /metrics ({}) lacks {needle:?}:\n{}",
                    metrics.status, metrics.body
                ))
                .await);
        }
    }

    cli_ok(&cluster, &["perform-failover"]).await?;
    cluster
        .wait_state(
            Duration::from_secs(90),
            &format!("{new} primary and {old} secondary after perform-failover"),
            |s| {
                s.node(&new).is_some_and(|n| n.reports_writable_primary())
                    && s.node(&old).is_some_and(|n| n.settled_in(SECONDARY))
            },
        )
        .await?;
    wait_endpoints(
        &cluster,
        &format!("{new} to answer as the primary and {old} as a replica after the failover"),
        &[
            (&new, "/primary", 200),
            (&new, "/replica", 503),
            (&old, "/primary", 503),
            (&old, "/replica", 200),
            (&old, "/replica?lag=16MB", 200),
            (&old, "/health", 200),
            (&old, "/sync", 200),
            (&new, "/sync", 503),
            (&new, "/read-only", 200),
            (&old, "/readiness", 200),
        ],
    )
    .await?;

    // A standby kept out of the read pools: 503 on every read endpoint,
    // ready all the same.
    cluster.stop_keeper(&old).await?;
    let config = cluster.keeper_config_path(&old)?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str("noloadbalance = true\n");
    std::fs::write(&config, text)?;
    cluster.start_keeper(&old)?;
    wait_endpoints(
        &cluster,
        &format!("{old} (noloadbalance) out of the read pools"),
        &[
            (&old, "/replica", 503),
            (&old, "/read-only", 503),
            (&old, "/sync", 503),
            (&old, "/async", 503),
            (&old, "/readiness", 200),
            (&old, "/liveness", 200),
            (&old, "/health", 200),
        ],
    )
    .await?;
    cluster.shutdown().await
}

/// Every PromQL query of a Grafana dashboard: panel targets (rows' nested
/// panels too), query variables (`label_values(metric, label)` asks for
/// `metric`) and annotations.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((format!("panel {title:?} {}", t["refId"]), expr.to_string()));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        let expr = match q.strip_prefix("label_values(") {
            Some(rest) => rest.split(',').next().unwrap_or("").trim().to_string(),
            None => q.to_string(),
        };
        out.push((format!("variable {}", v["name"]), expr));
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = a["expr"].as_str() {
            out.push((format!("annotation {}", a["name"]), expr.to_string()));
        }
    }
    out
}

/// Grafana's variables, as the dashboards use them, for a direct query.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "10m")
        .replace("$__interval", "5s")
        .replace("$formation", ".*")
}

fn dashboards() -> Result<Vec<(String, serde_json::Value)>> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            let json = serde_json::from_str(&text)
                .map_err(|e| anyhow!("{} is not valid JSON: {e}", path.display()))?;
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The state timelines' value mappings name each protocol number's state.
#[test]
fn dashboard_state_mappings_match_the_protocol() -> Result<()> {
    let boards = dashboards()?;
    assert!(boards.len() >= 2, "expected at least two dashboards");
    let mut checked = 0;
    for (file, board) in &boards {
        let mut stack = vec![board["panels"].clone()];
        while let Some(list) = stack.pop() {
            for p in list.as_array().into_iter().flatten() {
                stack.push(p["panels"].clone());
                let expr = p["targets"][0]["expr"].as_str().unwrap_or("");
                if !expr.contains("_state_code") {
                    continue;
                }
                let options = &p["fieldConfig"]["defaults"]["mappings"][0]["options"];
                for state in ReplicationState::ALL {
                    let text = options[state.to_wire().to_string()]["text"].as_str();
                    assert_eq!(text, Some(state.as_str()), "{file} panel {}", p["title"]);
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "no state timeline found");
    Ok(())
}

/// A real Prometheus scrapes the monitor and the keepers; after an
/// unplanned failover the failover counter has grown, the state metrics
/// name the new primary, and every query of every shipped dashboard
/// returns at least one series. Then `show-events` lists the failover's
/// goal changes in order, each with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_dashboards_and_events_after_a_failover() -> Result<()> {
    use pgpilot_tests::prometheus::{Job, Prometheus};

    let cluster = Cluster::start(observed_cluster(2)).await?;
    cluster.wait_healthy_pair().await?;
    let old = cluster.primary_name().await?;
    let new = cluster.other_node(&old)?;
    let monitor_port = cluster
        .monitor_metrics_port()
        .ok_or_else(|| anyhow!("the monitor has no metrics port"))?;
    let prometheus = Prometheus::start(&[
        Job {
            name: "pgpilot-monitor",
            ports: vec![monitor_port],
        },
        Job {
            name: "pgpilot-keeper",
            ports: vec![
                cluster.keeper_http_port(&old)?,
                cluster.keeper_http_port(&new)?,
            ],
        },
    ])
    .await?;
    let p = &prometheus;
    let c = &cluster;
    let fail = |what: String| async move {
        c.failure(format!(
            "{what}\nPrometheus targets:\n{}\nPrometheus log tail:\n{}",
            p.targets().await,
            p.log_text()
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .join("\n")
        ))
        .await
    };

    let before = cluster
        .wait_for(
            Duration::from_secs(60),
            "Prometheus to scrape all three targets and see the failover counters",
            || async move {
                let up = p.value("sum(up)").await?.unwrap_or(0.0);
                let failovers = p
                    .value("sum(max by (formation, reason) (pgpilot_failovers_total))")
                    .await?;
                Ok((up == 3.0).then_some(failovers).flatten())
            },
        )
        .await;
    let before = match before {
        Ok(v) => v,
        Err(e) => return Err(fail(format!("{e:#}")).await),
    };

    cluster
        .kill_primary_until_promoted(&old, &new, Duration::from_secs(90))
        .await?;

    let (old_ref, new_ref) = (old.as_str(), new.as_str());
    let seen = cluster
        .wait_for(Duration::from_secs(60), "Prometheus to see the failover and the new primary", || async move {
            let failovers = p.value("sum(max by (formation, reason) (pgpilot_failovers_total))").await?.unwrap_or(0.0);
            let new_primary = p.value(&format!("pgpilot_node_is_primary{{node=\"{new_ref}\"}}")).await?;
            let old_primary = p.value(&format!("pgpilot_node_is_primary{{node=\"{old_ref}\"}}")).await?;
            let writable = p.value("sum(pgpilot_formation_writable_primary)").await?;
            let keeper_primary = p
                .value(&format!(
                    "max by (node) (pgpilot_keeper_state{{state=~\"primary|wait_primary\"}} \
                     * on(instance) group_left(node) pgpilot_keeper_info{{node=\"{new_ref}\"}})"
                ))
                .await?;
            if failovers >= before + 1.0
                && new_primary == Some(1.0)
                && old_primary == Some(0.0)
                && writable == Some(1.0)
                && keeper_primary == Some(1.0)
            {
                return Ok(Some(failovers));
            }
            Err(anyhow!(
                "failovers {failovers} (before {before}), is_primary {new_ref} {new_primary:?} {old_ref} {old_primary:?}, \
                 writable primary {writable:?}, keeper state of {new_ref} primary/wait_primary {keeper_primary:?}"
            ))
        })
        .await;
    let after = match seen {
        Ok(v) => v,
        Err(e) => return Err(fail(format!("{e:#}")).await),
    };
    println!("failovers counted by Prometheus: {before} before, {after} after");

    // The old primary rejoins; then a planned switchover back to it.
    cluster.start_keeper(&old)?;
    cluster.wait_healthy_pair().await?;
    cli_ok(&cluster, &["perform-switchover", "--to", &old]).await?;
    let switched = cluster
        .wait_for(Duration::from_secs(60), "Prometheus to see the switchover", || async move {
            let n = p
                .value("sum(max by (formation, reason) (pgpilot_switchovers_total{reason=\"perform_switchover\"}))")
                .await?;
            let old_primary = p.value(&format!("pgpilot_node_is_primary{{node=\"{old_ref}\"}}")).await?;
            let up = p.value("sum(up)").await?;
            if n >= Some(1.0) && old_primary == Some(1.0) && up == Some(3.0) {
                return Ok(Some(()));
            }
            Err(anyhow!("switchovers {n:?}, is_primary {old_ref} {old_primary:?}, targets up {up:?}"))
        })
        .await;
    if let Err(e) = switched {
        return Err(fail(format!("{e:#}")).await);
    }

    // Every dashboard query answers with at least one series.
    let mut empty = Vec::new();
    let mut count = 0;
    for (file, board) in dashboards()? {
        for (what, expr) in dashboard_queries(&board) {
            count += 1;
            let query = substitute(&expr);
            match prometheus.query(&query).await {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => empty.push(format!("{file} {what}: no series for {query}")),
                Err(e) => empty.push(format!("{file} {what}: {e:#}")),
            }
        }
    }
    if !empty.is_empty() {
        return Err(fail(format!(
            "{} of {count} dashboard queries failed:\n{}",
            empty.len(),
            empty.join("\n")
        ))
        .await);
    }
    println!("{count} dashboard queries answered with at least one series");
    for q in ["scrape_duration_seconds", "scrape_samples_scraped"] {
        for series in prometheus.query(q).await? {
            println!(
                "{q} {} {}: {}",
                series["metric"]["job"].as_str().unwrap_or("?"),
                series["metric"]["instance"].as_str().unwrap_or("?"),
                series["value"][1].as_str().unwrap_or("?")
            );
        }
    }

    // show-events: the failover's goal changes, in order, each with a reason.
    let events = cli_ok(&cluster, &["show-events", "--json", "--count", "100"]).await?;
    let events: Vec<serde_json::Value> = serde_json::from_str(&events)?;
    let ids: Vec<i64> = events
        .iter()
        .filter_map(|e| e["event_id"].as_i64())
        .collect();
    if ids.windows(2).any(|w| w[0] >= w[1])
        || events
            .iter()
            .any(|e| e["reason"].as_str().is_none_or(str::is_empty))
    {
        return Err(cluster
            .failure(format!(
                "show-events --json is out of order or lacks reasons: {events:#?}"
            ))
            .await);
    }
    let start = events
        .iter()
        .position(|e| e["node_name"] == new_ref && e["goal_to"] == "report_lsn")
        .ok_or_else(|| anyhow!("no report_lsn event for {new}"))?;
    let end = events
        .iter()
        .position(|e| {
            e["node_name"] == new_ref
                && e["goal_to"] == "wait_primary"
                && e["goal_from"] == "stop_replication"
        })
        .map_or(events.len(), |i| i + 1);
    let goals_of = |node: &str| -> Vec<String> {
        events[start..end.max(start)]
            .iter()
            .filter(|e| e["node_name"] == node)
            .map(|e| e["goal_to"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let promoted = goals_of(new_ref);
    let expected = [
        "report_lsn",
        "prepare_promotion",
        "stop_replication",
        "wait_primary",
    ];
    let mut it = promoted.iter();
    if !expected.iter().all(|g| it.any(|x| x == g))
        || !goals_of(old_ref).contains(&"demoted".to_string())
    {
        return Err(cluster
            .failure(format!(
                "show-events does not list the failover in order: {new} went {promoted:?}, {old} went {:?}",
                goals_of(old_ref)
            ))
            .await);
    }
    let table = cli_ok(
        &cluster,
        &["show-events", "--count", "100", "--node", new_ref],
    )
    .await?;
    for needle in [
        "report_lsn",
        "prepare_promotion",
        "stop_replication",
        "wait_primary",
        &new,
    ] {
        if !table.contains(needle) {
            return Err(cluster
                .failure(format!(
                    "show-events --node {new} lacks {needle:?}:\n{table}"
                ))
                .await);
        }
    }
    let only: Vec<serde_json::Value> = serde_json::from_str(
        &cli_ok(
            &cluster,
            &["show-events", "--json", "--count", "100", "--node", new_ref],
        )
        .await?,
    )?;
    if only.is_empty() || only.iter().any(|e| e["node_name"] != new_ref) {
        return Err(cluster
            .failure(format!(
                "show-events --json --node {new} shows other nodes: {only:#?}"
            ))
            .await);
    }
    let other = cli_ok(&cluster, &["show-events", "--formation", "nosuchformation"]).await;
    if let Ok(text) = &other {
        if text.contains(&new) {
            return Err(cluster
                .failure(format!(
                    "show-events of another formation shows {new}:\n{text}"
                ))
                .await);
        }
    }
    drop(prometheus);
    cluster.shutdown().await
}

/// Every `*.log` file under `dir`, recursively (PGDATA's contents other
/// than logs are skipped).
fn log_files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            log_files_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "log") {
            out.push(path);
        }
    }
}

/// The monitor reaches its database as role `pgpilot` with a password
/// (scram-sha-256). After a whole run — start, failover, operator
/// commands, a monitor started with a wrong password, shutdown — no log
/// file of the run and no command output holds either password, and the
/// monitor did log its database URL (redacted). Log files carry no
/// terminal colour codes either (colour only on a terminal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_log() -> Result<()> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let secret = format!("S3cret{}x{stamp}", std::process::id());
    let wrong = format!("Wr0ng{}y{stamp}", std::process::id());
    let tools = pgpilot_tests::Tools::locate()?;
    let scratch = tools.scratch_dir("pgpilot-secrets-")?;
    let root = scratch.path().join("cluster");
    let cluster = Cluster::start(ClusterOptions {
        http: true,
        monitor_db_password: Some(secret.clone()),
        dir: Some(root.clone()),
        ..ClusterOptions::nodes(2)
    })
    .await?;
    cluster.wait_healthy_pair().await?;
    let mut outputs = String::new();
    outputs.push_str(&cli_ok(&cluster, &["perform-failover"]).await?);
    cluster.wait_healthy_pair().await?;
    for args in [
        &["show-state"][..],
        &["show-state", "--json"],
        &["show-events", "--count", "100"],
        &["show-events", "--json", "--count", "100"],
        &["show-node", "node1"],
        &["show-uri"],
    ] {
        outputs.push_str(&cli_ok(&cluster, args).await?);
    }
    for node in cluster.node_names() {
        outputs.push_str(&keeper_get(&cluster, &node, "/metrics").await?.body);
        outputs.push_str(&keeper_get(&cluster, &node, "/primary").await?.body);
    }
    if let Some(port) = cluster.monitor_metrics_port() {
        outputs.push_str(&http::get(port, "/metrics").await?.body);
    }

    // A monitor given a wrong password fails, saying so without it.
    let monitor_toml = std::fs::read_to_string(root.join("monitor.toml"))?;
    let bad_toml = root.join("monitor-wrong-password.toml");
    let listen_port = pgpilot_tests::process::free_port()?;
    let bad = monitor_toml
        .lines()
        .map(|l| {
            if l.starts_with("database_url") {
                l.replace(&secret, &wrong)
            } else if l.starts_with("listen") {
                format!("listen = \"127.0.0.1:{listen_port}\"")
            } else if l.starts_with("metrics_listen") {
                String::new()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if !bad.contains(&wrong) {
        return Err(cluster
            .failure(format!(
                "the harness's monitor.toml has no password to replace:\n{monitor_toml}"
            ))
            .await);
    }
    std::fs::write(&bad_toml, bad)?;
    // It holds a password: the monitor refuses it when others can read it.
    std::fs::set_permissions(
        &bad_toml,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let mut cmd = tokio::process::Command::from(tools.monitor_command());
    cmd.args(["run", "--config"])
        .arg(&bad_toml)
        .kill_on_drop(true);
    let refused = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| anyhow!("a monitor with a wrong password did not stop within 60s"))??;
    let refused_text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    if refused.status.success() || !refused_text.contains("pgpilot:****@") {
        return Err(cluster
            .failure(format!(
                "a monitor with a wrong password should fail naming the redacted URL, got {}:\n{refused_text}",
                refused.status
            ))
            .await);
    }
    outputs.push_str(&refused_text);

    let mut files = cluster.log_files();
    cluster.shutdown().await?;
    log_files_under(&root, &mut files);
    files.sort();
    files.dedup();
    let mut leaks = Vec::new();
    let mut scanned = 0;
    let mut redacted_url_logged = false;
    let mut coloured = Vec::new();
    for file in &files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        scanned += 1;
        let text = String::from_utf8_lossy(&bytes);
        for (name, s) in [("password", &secret), ("wrong password", &wrong)] {
            if text.contains(s.as_str()) {
                leaks.push(format!("{} holds the {name}", file.display()));
            }
        }
        redacted_url_logged |= text.contains("database=postgres://pgpilot:****@");
        if text.contains('\u{1b}') {
            coloured.push(file.display().to_string());
        }
    }
    for (name, s) in [("password", &secret), ("wrong password", &wrong)] {
        if outputs.contains(s.as_str()) {
            leaks.push(format!(
                "an operator command or HTTP answer holds the {name}"
            ));
        }
    }
    println!(
        "scanned {scanned} log files and {} bytes of command output",
        outputs.len()
    );
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    assert!(
        coloured.is_empty(),
        "log files with terminal colour codes: {coloured:?}"
    );
    assert!(scanned >= 6, "expected the monitor's, its database's and two nodes' keeper and PostgreSQL logs, scanned {scanned}: {files:?}");
    assert!(
        redacted_url_logged,
        "the monitor did not log its database URL (redacted)"
    );
    Ok(())
}
