//! The operator CLI against real monitors: every read-only subcommand on a
//! running two-node cluster, `show-events --follow` and `show-state --watch`
//! as long-running children, and the documented exit codes (0 ok, 1 failed,
//! 2 usage or invalid input, 3 monitor unreachable).
//!
//! Needs `cargo build --workspace` first (the tests run the built
//! `pgpilot-monitor` and `pgpilot-keeper`) and PostgreSQL's server programs.

use std::collections::BTreeSet;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgpilot_tests::operator::{cli, cli_json, cli_ok, describe};
use pgpilot_tests::process::free_port;
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, Tools};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Two nodes cloned and settled on a loaded two-core machine.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(180);
/// A follower or watcher shows what it should within this.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(60);
/// A command that must not hang (an unreachable monitor, a refused flag).
const QUICK_TIMEOUT: Duration = Duration::from_secs(30);

/// The column headers of `show-state` and `show-nodes`.
const STATE_COLUMNS: [&str; 10] = [
    "Node",
    "Host:Port",
    "TLI:LSN",
    "Connection",
    "Lag",
    "Reported",
    "Goal",
    "PostgreSQL",
    "Health",
    "Heartbeat",
];
const NODES_COLUMNS: [&str; 15] = [
    "Id",
    "Name",
    "Host:Port",
    "Group",
    "System identifier",
    "Priority",
    "Quorum",
    "Reported",
    "Goal",
    "PostgreSQL",
    "Connection",
    "Health",
    "Heartbeat",
    "TLI:LSN",
    "Streaming",
];

// ---- helpers -----------------------------------------------------------------

/// `pgpilot-monitor <args>` without a cluster, killed past [`QUICK_TIMEOUT`].
async fn run_alone(tools: &Tools, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    let mut cmd = Command::from(tools.monitor_command());
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(QUICK_TIMEOUT, cmd.output())
        .await
        .map_err(|_| anyhow!("pgpilot-monitor {args:?} was still running after {QUICK_TIMEOUT:?}"))?
        .with_context(|| format!("running pgpilot-monitor {args:?}"))
}

/// Exit `code` and a stderr containing every one of `needles`.
fn expect_refusal(output: &Output, code: i32, needles: &[&str], what: &str) -> Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() != Some(code) || !needles.iter().all(|n| stderr.contains(n)) {
        bail!(
            "{what}: expected exit {code} and stderr containing {needles:?}\n{}",
            describe(output)
        );
    }
    Ok(())
}

/// `doc`, the output of `what`, has every `required` key of
/// `docs/NAME.schema.json`: at the top level and in each item of an array
/// whose items the schema defines (`"items": {"$ref": ...}`, e.g. `nodes`).
fn expect_documented_keys(doc: &Value, name: &str, what: &str) -> Result<()> {
    let path = format!("{}/../docs/{name}.schema.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let schema: Value = serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
    let expect_keys = |value: &Value, object: &Value, at: &str| -> Result<()> {
        let required = object["required"]
            .as_array()
            .ok_or_else(|| anyhow!("{path}: `required` at {at} is not an array"))?;
        for key in required {
            let key = key
                .as_str()
                .ok_or_else(|| anyhow!("{path}: a required key at {at} is not a string"))?;
            if value.get(key).is_none() {
                bail!("{what} lacks the documented key {key:?} at {at}:\n{doc:#}");
            }
        }
        Ok(())
    };
    expect_keys(doc, &schema, "$")?;
    let properties = schema["properties"]
        .as_object()
        .ok_or_else(|| anyhow!("{path}: `properties` is not an object"))?;
    for (key, property) in properties {
        let Some(reference) = property["items"]["$ref"].as_str() else {
            continue;
        };
        let items = reference
            .strip_prefix('#')
            .and_then(|pointer| schema.pointer(pointer))
            .ok_or_else(|| anyhow!("{path}: $ref {reference} does not resolve"))?;
        for (i, item) in doc[key].as_array().into_iter().flatten().enumerate() {
            expect_keys(item, items, &format!("$.{key}[{i}]"))?;
        }
    }
    Ok(())
}

/// A long-running `pgpilot-monitor` child whose stdout is read as it comes.
struct Running {
    child: Child,
    chunks: mpsc::UnboundedReceiver<String>,
    /// Everything read so far.
    seen: String,
    what: String,
}

impl Running {
    fn start(cluster: &Cluster, args: &[&str], by_line: bool) -> Result<Running> {
        let mut cmd = Command::from(cluster.tools().monitor_command());
        cmd.args(args)
            .args(["--monitor", cluster.monitor_url()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let what = format!("pgpilot-monitor {}", args.join(" "));
        let mut child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{what}: no stdout"))?;
        let (tx, chunks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut chunk = String::new();
                let read = if by_line {
                    reader.read_line(&mut chunk).await
                } else {
                    let mut buf = vec![0; 8192];
                    let read = reader.read(&mut buf).await;
                    if let Ok(n) = read {
                        chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                    }
                    read
                };
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(chunk).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Running {
            child,
            chunks,
            seen: String::new(),
            what,
        })
    }

    /// The next line (or chunk) of stdout; an error past `deadline` or when
    /// the child closed its stdout.
    async fn next(&mut self, deadline: Instant) -> Result<String> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, self.chunks.recv()).await {
            Ok(Some(chunk)) => {
                self.seen.push_str(&chunk);
                Ok(chunk)
            }
            Ok(None) => bail!(
                "{} closed its output ({:?}); it printed:\n{}",
                self.what,
                self.child.try_wait(),
                self.seen
            ),
            Err(_) => bail!(
                "{} printed nothing more before the deadline; it printed:\n{}",
                self.what,
                self.seen
            ),
        }
    }

    /// Ctrl-C, then the exit code (which must come within [`QUICK_TIMEOUT`]).
    async fn interrupt(mut self) -> Result<Option<i32>> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow!("{} has already exited", self.what))?;
        kill(Pid::from_raw(pid as i32), Signal::SIGINT)
            .with_context(|| format!("sending SIGINT to {}", self.what))?;
        let status = tokio::time::timeout(QUICK_TIMEOUT, self.child.wait())
            .await
            .map_err(|_| anyhow!("{} did not exit on Ctrl-C", self.what))??;
        Ok(status.code())
    }
}

// ---- a running cluster -------------------------------------------------------

/// Every read-only subcommand on a healthy pair, in table and JSON form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    let state = cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let primary = cluster.primary_name().await?;
    let standby = cluster.other_node(&primary)?;
    let names = cluster.node_names();

    // show-state: every column, the roles' connections.
    let table = cli_ok(&cluster, &["show-state"]).await?;
    for column in STATE_COLUMNS {
        if !table.contains(column) {
            bail!("show-state has no column {column:?}:\n{table}");
        }
    }
    if !table.contains("read-write") || !table.contains("read-only") {
        bail!("show-state of a healthy pair lacks a read-write and a read-only node:\n{table}");
    }

    // show-state --json: the documented shape, with connection and lag.
    let doc = cli_json(&cluster, &["show-state", "--json"]).await?;
    expect_documented_keys(&doc, "show-state", "show-state --json")?;
    let nodes = doc["nodes"]
        .as_array()
        .ok_or_else(|| anyhow!("show-state --json: `nodes` is not an array:\n{doc:#}"))?;
    if nodes.len() != 2 {
        bail!(
            "show-state --json lists {} nodes, not 2:\n{doc:#}",
            nodes.len()
        );
    }
    for node in nodes {
        let name = node["name"].as_str().unwrap_or_default();
        let expected_id = state.node(name).map(|n| n.system_identifier.to_string());
        if node["system_identifier"].as_str().map(str::to_string) != expected_id {
            bail!("{name}: system_identifier is not {expected_id:?} as a string:\n{node:#}");
        }
        let (connection, lag) = (&node["connection"], &node["lag_bytes"]);
        let fits = if name == primary {
            connection == "read-write" && lag.is_null()
        } else {
            connection == "read-only" && lag.is_u64()
        };
        if !fits {
            bail!(
                "{name} (primary: {primary}): connection {connection} and lag_bytes {lag} do not \
                 fit its role:\n{doc:#}"
            );
        }
    }

    // show-nodes: every column, one row per node.
    let table = cli_ok(&cluster, &["show-nodes"]).await?;
    for column in NODES_COLUMNS {
        if !table.contains(column) {
            bail!("show-nodes has no column {column:?}:\n{table}");
        }
    }
    for n in &state.nodes {
        let row = table
            .lines()
            .find(|l| l.contains(&format!(" {} ", n.name)))
            .ok_or_else(|| anyhow!("show-nodes has no row for {}:\n{table}", n.name))?;
        let port = format!(":{}", n.port);
        let sysid = n.system_identifier.to_string();
        if !row.contains(&port) || !row.contains(&sysid) {
            bail!(
                "the show-nodes row of {} lacks {port} or system identifier {sysid}:\n{table}",
                n.name
            );
        }
    }
    let json = cli_json(&cluster, &["show-nodes", "--json"]).await?;
    if json.as_array().map(Vec::len) != Some(2) {
        bail!("show-nodes --json is not an array of 2 nodes:\n{json:#}");
    }

    // show-node NAME, and --json.
    let text = cli_ok(&cluster, &["show-node", &standby]).await?;
    for (key, value) in [
        ("name", standby.as_str()),
        ("connection", "read-only"),
        ("reported state", "secondary"),
        ("streaming", "yes"),
    ] {
        let found = text.lines().any(|l| {
            l.split_once(':')
                .is_some_and(|(k, v)| k == key && v.trim() == value)
        });
        if !found {
            bail!("show-node {standby} has no line `{key}: {value}`:\n{text}");
        }
    }
    let node = cli_json(&cluster, &["show-node", &primary, "--json"]).await?;
    if node["name"] != primary.as_str() || node["connection"] != "read-write" {
        bail!("show-node {primary} --json is not the read-write primary:\n{node:#}");
    }

    // An unknown node: exit 2 with the closest name.
    let output = cli(&cluster, &["show-node", "nod1"]).await?;
    expect_refusal(
        &output,
        2,
        &["no node named \"nod1\"", "did you mean node1?"],
        "show-node nod1",
    )?;

    // show-events: JSON, and --node keeps only that node's events.
    let events = cli_json(&cluster, &["show-events", "--json", "--count", "100"]).await?;
    let all = events
        .as_array()
        .ok_or_else(|| anyhow!("show-events --json is not an array:\n{events:#}"))?;
    let involved: BTreeSet<&str> = all.iter().filter_map(|e| e["node_name"].as_str()).collect();
    if involved.len() != 2 || all.iter().any(|e| !e["event_id"].is_i64()) {
        bail!("show-events --json of a fresh pair should have events of both nodes:\n{events:#}");
    }
    for name in &names {
        let mine = cli_json(
            &cluster,
            &["show-events", "--json", "--count", "100", "--node", name],
        )
        .await?;
        let mine = mine.as_array().cloned().unwrap_or_default();
        let expected = all
            .iter()
            .filter(|e| e["node_name"] == name.as_str())
            .count();
        if mine.is_empty()
            || mine.len() != expected
            || mine.iter().any(|e| e["node_name"] != name.as_str())
        {
            bail!(
                "show-events --node {name} printed {} events, expected its {expected}:\n{mine:#?}",
                mine.len()
            );
        }
    }
    let text = cli_ok(&cluster, &["show-events"]).await?;
    if !text.contains("Goal change") {
        bail!("show-events prints no table:\n{text}");
    }
    let output = cli(&cluster, &["show-events", "--node", "nod2"]).await?;
    expect_refusal(
        &output,
        2,
        &["did you mean node2?"],
        "show-events --node nod2",
    )?;

    // An unknown formation: exit 2, also where the monitor has no events to show.
    for args in [
        &["show-events", "--formation", "nope"][..],
        &["show-events", "--follow", "--formation", "nope"],
        &["show-state", "--watch", "--formation", "nope"],
    ] {
        let output = cli(&cluster, args).await?;
        expect_refusal(&output, 2, &["nope"], &args.join(" "))?;
    }

    // show-uri, and show-settings --json in its documented shape.
    let uri = cli_ok(&cluster, &["show-uri"]).await?;
    for n in &state.nodes {
        if !uri.contains(&format!("127.0.0.1:{}", n.port)) {
            bail!("show-uri lacks {}'s port {}: {uri}", n.name, n.port);
        }
    }
    if !uri.trim().ends_with("target_session_attrs=read-write") {
        bail!("show-uri does not ask for the read-write node: {uri}");
    }
    let settings = cli_json(&cluster, &["show-settings", "--json"]).await?;
    expect_documented_keys(&settings, "show-settings", "show-settings --json")?;
    if !settings["number_sync_standbys"].is_u64()
        || settings["nodes"].as_array().map(Vec::len) != Some(2)
    {
        bail!("show-settings --json lacks number_sync_standbys or the 2 nodes:\n{settings:#}");
    }

    // show-state --watch: redraws in place until Ctrl-C, then exits 0.
    let mut watch = Running::start(&cluster, &["show-state", "--watch", "300ms"], false)?;
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    while watch.seen.matches("\x1b[2J\x1b[H").count() < 3 || !watch.seen.contains("Connection") {
        watch.next(deadline).await?;
    }
    let frames = watch.seen.clone();
    let code = watch.interrupt().await?;
    if code != Some(0) {
        bail!("show-state --watch exited {code:?} on Ctrl-C, not 0; it printed:\n{frames}");
    }
    Ok(())
}

/// `show-events --follow` prints the events of a switchover as they are
/// recorded, each once; with `--node` only that node's; Ctrl-C exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_new_events() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let old = cluster.primary_name().await?;
    let new = cluster.other_node(&old)?;

    let latest = cli_json(&cluster, &["show-events", "--json", "--count", "1"]).await?;
    let before = latest[0]["event_id"]
        .as_i64()
        .ok_or_else(|| anyhow!("no event yet on a healthy pair:\n{latest:#}"))?;

    let mut all = Running::start(&cluster, &["show-events", "--follow", "--json"], true)?;
    let mut mine = Running::start(
        &cluster,
        &["show-events", "--follow", "--json", "--node", &old],
        true,
    )?;
    // The backlog first: up to the latest event.
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    loop {
        let line = all.next(deadline).await?;
        let event: Value = serde_json::from_str(&line)
            .with_context(|| format!("parsing a --follow --json line: {line}"))?;
        if event["event_id"].as_i64() >= Some(before) {
            break;
        }
    }

    let output = cli(&cluster, &["perform-switchover", "--to", &new]).await?;
    if !output.status.success() {
        return Err(cluster
            .failure(format!("perform-switchover failed:\n{}", describe(&output)))
            .await);
    }
    eprintln!(
        "perform-switchover printed:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );

    // New events arrive, each once, in order; the old primary drains.
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    let mut last = before;
    let mut new_events = 0;
    let mut drained = false;
    while !drained {
        let line = all.next(deadline).await?;
        let event: Value = serde_json::from_str(&line)
            .with_context(|| format!("parsing a --follow --json line: {line}"))?;
        let id = event["event_id"]
            .as_i64()
            .ok_or_else(|| anyhow!("a followed event has no event_id: {line}"))?;
        if id <= last {
            bail!(
                "show-events --follow printed event {id} after {last}:\n{}",
                all.seen
            );
        }
        last = id;
        new_events += 1;
        drained = event["node_name"] == old.as_str() && event["goal_to"] == "draining";
    }
    eprintln!("show-events --follow printed {new_events} new events up to {old} draining");

    // The --node follower saw the same event, and no other node's.
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    loop {
        let line = mine.next(deadline).await?;
        let event: Value = serde_json::from_str(&line)
            .with_context(|| format!("parsing a --follow --json line: {line}"))?;
        if event["node_name"] != old.as_str() {
            bail!("show-events --follow --node {old} printed another node's event: {line}");
        }
        if event["event_id"].as_i64() > Some(before) && event["goal_to"] == "draining" {
            break;
        }
    }

    for follower in [all, mine] {
        let what = follower.what.clone();
        let code = follower.interrupt().await?;
        if code != Some(0) {
            bail!("{what} exited {code:?} on Ctrl-C, not 0");
        }
    }
    Ok(())
}

// ---- no cluster needed -------------------------------------------------------

/// Nothing listens at the address: exit 3 naming it, for one-shot and
/// long-running commands alike.
#[tokio::test]
async fn unreachable_monitor_exits_3() -> Result<()> {
    let tools = Tools::locate()?;
    let address = format!("127.0.0.1:{}", free_port()?);
    let url = format!("http://{address}");
    for args in [
        vec!["show-nodes"],
        vec!["show-node", "node1"],
        vec!["show-events", "--follow"],
        vec!["show-state", "--watch"],
    ] {
        let mut all = args.clone();
        all.extend(["--monitor", &url]);
        let output = run_alone(&tools, &all, &[]).await?;
        expect_refusal(&output, 3, &[&address, "unreachable"], &args.join(" "))?;
    }
    Ok(())
}

/// TLS settings that do not fit the monitor URL are refused with exit 2
/// and one sentence: TLS options with an http:// URL, an https:// URL
/// without the CA to check the monitor with.
#[tokio::test]
async fn tls_options_that_do_not_fit_the_url_exit_2() -> Result<()> {
    let tools = Tools::locate()?;
    let http = format!("http://127.0.0.1:{}", free_port()?);
    let https = http.replace("http://", "https://");
    /// Arguments, environment, the words on stderr.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            &[
                "show-state",
                "--tls-ca",
                "/etc/pgpilot/ca.pem",
                "--monitor",
                &http,
            ],
            &[],
            &["need an https:// monitor URL"],
        ),
        (
            &["show-nodes", "--monitor", &http],
            &[("PGPILOT_TLS_CERT", "/etc/pgpilot/client.pem")],
            &["need an https:// monitor URL"],
        ),
        (
            &["show-state", "--tls-key", "k.pem", "--monitor", &https],
            &[],
            &["needs --tls-ca FILE"],
        ),
        (
            &["show-events", "--monitor", &https],
            &[],
            &["needs --tls-ca FILE"],
        ),
    ];
    for (args, env, words) in cases {
        let output = run_alone(&tools, args, env).await?;
        expect_refusal(&output, 2, words, &args.join(" "))?;
    }
    Ok(())
}

/// Every subcommand's `--help` shows an example.
#[tokio::test]
async fn every_help_has_an_example() -> Result<()> {
    let tools = Tools::locate()?;
    let top = run_alone(&tools, &["--help"], &[]).await?;
    let text = String::from_utf8_lossy(&top.stdout).into_owned();
    let commands: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    if commands.len() < 16 || !text.contains("Example:") {
        bail!("pgpilot-monitor --help lists too few commands or no example:\n{text}");
    }
    for command in &commands {
        let output = run_alone(&tools, &[command, "--help"], &[]).await?;
        let help = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !help.contains("Example: ") {
            bail!(
                "`{command} --help` shows no example:\n{}",
                describe(&output)
            );
        }
    }
    Ok(())
}

/// Formations by command: the harness made this cluster's formation with
/// `create-formation`, and its node registered into it; `show-formations`
/// lists every formation with its node count; a formation that exists,
/// still holds nodes, is the default or does not exist is refused in one
/// sentence; an empty one is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formations_are_made_listed_and_dropped_by_command() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        formation: "analytics".into(),
        ..ClusterOptions::nodes(1)
    })
    .await?;
    cluster
        .wait_state(HEALTHY_TIMEOUT, "node1 the primary of analytics", |s| {
            s.writable_primaries().len() == 1
        })
        .await?;
    let listed = |v: &Value, name: &str| -> Option<(u64, u64)> {
        v.as_array()?
            .iter()
            .find(|f| f["formation"] == name)
            .map(|f| {
                (
                    f["number_sync_standbys"].as_u64().unwrap_or(99),
                    f["nodes"].as_u64().unwrap_or(99),
                )
            })
    };
    let all = cli_json(&cluster, &["show-formations", "--json"]).await?;
    assert_eq!(listed(&all, "default"), Some((0, 0)), "{all}");
    assert_eq!(listed(&all, "analytics"), Some((0, 1)), "{all}");

    for (args, says) in [
        (&["create-formation", "analytics"][..], "already exists"),
        (
            &["drop-formation", "analytics"][..],
            "still has 1 nodes (node1): drop-node",
        ),
        (&["drop-formation", "default"][..], "cannot be dropped"),
        (&["drop-formation", "nosuch"][..], "does not exist"),
        (&["create-formation", "bad name"][..], "is not valid"),
        (
            &["create-formation", "wide", "--number-sync-standbys", "17"][..],
            "at most 16",
        ),
    ] {
        let out = cli(&cluster, args).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says) && stderr.trim().lines().count() == 1,
            "{}: {}",
            args.join(" "),
            describe(&out)
        );
    }

    let made = cli_ok(
        &cluster,
        &[
            "create-formation",
            "reporting",
            "--number-sync-standbys",
            "1",
        ],
    )
    .await?;
    assert!(made.contains("formation reporting created"), "{made}");
    let table = cli_ok(&cluster, &["show-formations"]).await?;
    assert!(
        table.contains("reporting") && table.contains("analytics"),
        "{table}"
    );
    let all = cli_json(&cluster, &["show-formations", "--json"]).await?;
    assert_eq!(listed(&all, "reporting"), Some((1, 0)), "{all}");
    let dropped = cli_ok(&cluster, &["drop-formation", "reporting"]).await?;
    assert!(dropped.contains("formation reporting dropped"), "{dropped}");
    let all = cli_json(&cluster, &["show-formations", "--json"]).await?;
    assert_eq!(listed(&all, "reporting"), None, "{all}");
    cluster.shutdown().await
}

/// The systemd units in `packaging/systemd` start the binaries with
/// subcommands and flags they accept: each `ExecStart` run with the
/// configuration path swapped for a missing file stops at reading it
/// (exit 2, naming the file), not at a usage error.
#[tokio::test]
async fn systemd_units_run_commands_the_binaries_accept() -> Result<()> {
    let tools = Tools::locate()?;
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing.toml");
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd");
    for (unit, binary) in [
        ("pgpilot-keeper.service", &tools.keeper),
        ("pgpilot-monitor.service", &tools.monitor),
    ] {
        let text = std::fs::read_to_string(units.join(unit))?;
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .with_context(|| format!("{unit} has no ExecStart"))?;
        let mut words = exec.split_whitespace();
        let program = words.next().unwrap_or_default();
        assert!(
            program.ends_with(binary.file_name().unwrap().to_str().unwrap()),
            "{unit} starts {program}"
        );
        let args: Vec<String> = words
            .map(|w| {
                if w.ends_with(".toml") {
                    missing.display().to_string()
                } else {
                    w.to_string()
                }
            })
            .collect();
        let out = tokio::time::timeout(
            QUICK_TIMEOUT,
            Command::new(binary)
                .args(&args)
                .stdin(Stdio::null())
                .output(),
        )
        .await??;
        expect_refusal(&out, 2, &["missing.toml"], unit)?;
        assert!(
            text.contains("KillMode="),
            "{unit} must choose what a stop kills"
        );
    }
    Ok(())
}

/// `pgpilot-keeper init` writes a configuration `run` accepts, and
/// refuses a bad value or an existing file in one sentence.
#[tokio::test]
async fn keeper_init_writes_a_checked_configuration() -> Result<()> {
    let tools = Tools::locate()?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("keeper.toml");
    let init = |extra: &[&str]| {
        let mut cmd = Command::new(&tools.keeper);
        cmd.args([
            "init",
            "--name",
            "node1",
            "--host",
            "127.0.0.1",
            "--pgdata",
            "/var/lib/pgpilot/node1",
            "--monitor",
            "http://127.0.0.1:7430",
            "--out",
        ])
        .arg(&out)
        .args(extra)
        .stdin(Stdio::null());
        cmd
    };
    let first = init(&[]).output().await?;
    assert!(first.status.success(), "{}", describe(&first));
    let text = std::fs::read_to_string(&out)?;
    assert!(
        text.contains("name = \"node1\"") && text.contains("# clone_from"),
        "{text}"
    );
    let again = init(&[]).output().await?;
    expect_refusal(
        &again,
        2,
        &["exists", "--force"],
        "init over an existing file",
    )?;
    let bad = init(&["--candidate-priority", "300", "--force"])
        .output()
        .await?;
    expect_refusal(
        &bad,
        2,
        &["candidate_priority", "nothing was written"],
        "init with priority 300",
    )?;
    assert_eq!(
        std::fs::read_to_string(&out)?,
        text,
        "a refused init changed the file"
    );
    Ok(())
}
