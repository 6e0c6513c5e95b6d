//! Starting a cluster: the monitor's own PostgreSQL, the monitor, and one
//! keeper per node, each with its configuration file and log.

use std::fs;
use std::process::Child;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pgpilot_proto::pb::GetFormationStateRequest;

use crate::process::{self, free_port};
use crate::proxy::Proxy;
use crate::state::{FormationStateExt, NodeStatusExt};
use crate::tools::Tools;

use super::monitors::MonitorProc;
use super::options::{ClusterOptions, KeeperToml};
use super::{
    lock, open_log, random_secret, run_checked, with_suffix, write_secret_file, Cluster, Node,
};

/// How long the harness waits for the monitor to answer after its start.
pub(super) const MONITOR_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the first node gets to become a primary on its own.
const FIRST_NODE_TIMEOUT: Duration = Duration::from_secs(120);

impl Cluster {
    /// Start the monitor database, the monitor and `opts.nodes` keepers.
    /// Returns once every keeper is spawned (use [`Cluster::wait_healthy`]).
    pub async fn start(opts: ClusterOptions) -> Result<Cluster> {
        let tools = Tools::locate()?;
        process::become_subreaper();
        let (tempdir, root) = match &opts.dir {
            Some(dir) => {
                if dir.exists() && fs::read_dir(dir)?.next().is_some() {
                    bail!(
                        "{} is not empty; give a new or empty directory",
                        dir.display()
                    );
                }
                tools.make_dir(dir)?;
                (None, dir.canonicalize()?)
            }
            None => {
                let dir = tools.scratch_dir("pgpilot-test-")?;
                let root = dir.path().to_path_buf();
                (Some(dir), root)
            }
        };
        let mut cluster = Cluster {
            monitor_db_pgdata: root.join("monitor-db").join("data"),
            monitor_db_port: 0,
            monitor_db_settings: opts.monitor_db_settings.clone(),
            monitors: (0..opts.monitors.max(1))
                .map(|i| MonitorProc::new(&root, i, opts.http))
                .collect::<Result<_>>()?,
            monitor_db_password: None,
            monitor_db_standby: None,
            nodes: Vec::new(),
            supervision: Mutex::default(),
            tls: None,
            replication_password: None,
            tools,
            root,
            tempdir,
            formation: opts.formation.clone(),
            started: Instant::now(),
        };
        match cluster.boot(&opts).await {
            Ok(()) => Ok(cluster),
            Err(err) => {
                let diagnostics = cluster.diagnostics().await;
                Err(anyhow!(
                    "starting the test cluster in {} failed: {err:#}\n\n{diagnostics}",
                    cluster.root.display()
                ))
            }
        }
    }

    pub(super) async fn boot(&mut self, opts: &ClusterOptions) -> Result<()> {
        if opts.replication_password {
            let password = random_secret()?;
            let path = self.root.join("replication.password");
            write_secret_file(&path, &format!("{password}\n"))?;
            self.tools.hand_over(&path)?;
            self.replication_password = Some((password, path));
        }
        self.init_monitor_db(opts.monitor_db_password.as_deref())
            .await?;
        if opts.monitor_db_standby {
            self.add_monitor_db_standby().await?;
        }
        self.set_up_security(opts).await?;
        self.start_monitors(opts).await?;
        if self.formation != "default" {
            // Made the way an operator makes one.
            let formation = self.formation.clone();
            crate::operator::cli_ok(self, &["create-formation", &formation]).await?;
        }
        for i in 1..=opts.nodes {
            self.add_node(i, opts)?;
            if i == 1 && opts.first_node_alone && opts.nodes > 1 {
                self.spawn_keeper_of("node1")?;
                self.wait_state(
                    FIRST_NODE_TIMEOUT,
                    "node1 to become a writable primary on its own",
                    |s| {
                        s.node("node1")
                            .is_some_and(|n| n.reports_writable_primary())
                    },
                )
                .await?;
            }
        }
        for node in &self.nodes {
            if lock(&node.keeper).is_none() {
                self.spawn_keeper_of(&node.name)?;
            }
        }
        Ok(())
    }

    pub(super) async fn init_monitor_db(&mut self, password: Option<&str>) -> Result<()> {
        let dir = self.root.join("monitor-db");
        self.tools.make_dir(&dir)?;
        let pgdata = self.monitor_db_pgdata.clone();
        let mut initdb = self
            .tools
            .command_as_pg_user(self.tools.pg_program("initdb"), &dir);
        initdb
            .arg("-D")
            .arg(&pgdata)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .stdin(Stdio::null());
        run_checked(initdb, "initdb of the monitor database").await?;

        let log = with_suffix(&pgdata, ".log");
        let mut last_error = None;
        for _attempt in 0..3 {
            let port = free_port()?;
            match self.pg_ctl_start_monitor_db(port).await {
                Ok(()) => {
                    self.monitor_db_port = port;
                    last_error = None;
                    break;
                }
                Err(err) => {
                    let log_text = fs::read_to_string(&log).unwrap_or_default();
                    let port_taken = log_text.contains("could not bind")
                        || log_text.contains("Address already in use");
                    last_error = Some(err);
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        if let Some(err) = last_error {
            return Err(err);
        }

        self.monitor_db_sql(&["CREATE DATABASE pgpilot"]).await?;
        if let Some(password) = password {
            // Role pgpilot must give its password (scram-sha-256) over TCP;
            // the harness's own connections stay trusted.
            let hba = pgdata.join("pg_hba.conf");
            let rest =
                fs::read_to_string(&hba).with_context(|| format!("reading {}", hba.display()))?;
            fs::write(
                &hba,
                format!("host all pgpilot 127.0.0.1/32 scram-sha-256\n{rest}"),
            )
            .with_context(|| format!("writing {}", hba.display()))?;
            let literal = password.replace('\'', "''");
            self.monitor_db_sql(&[&format!(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE pgpilot LOGIN PASSWORD '{literal}';
                 ALTER DATABASE pgpilot OWNER TO pgpilot;
                 SELECT pg_reload_conf();"
            )])
            .await?;
            self.monitor_db_password = Some(password.to_string());
        }
        Ok(())
    }

    /// `pg_ctl start` of the monitor database on `port` (waits until it
    /// has started).
    pub(super) async fn pg_ctl_start_monitor_db(&self, port: u16) -> Result<()> {
        let dir = self.root.join("monitor-db");
        self.pg_ctl_start_postgres(&self.monitor_db_pgdata, &dir, port, "the monitor database")
            .await
    }

    /// `pg_ctl start` of a monitor database server in `pgdata` on `port`,
    /// its socket in `dir` (waits until it has started).
    pub(super) async fn pg_ctl_start_postgres(
        &self,
        pgdata: &std::path::Path,
        dir: &std::path::Path,
        port: u16,
        what: &str,
    ) -> Result<()> {
        let mut pg_ctl = self
            .tools
            .command_as_pg_user(self.tools.pg_program("pg_ctl"), dir);
        pg_ctl
            .arg("-D")
            .arg(pgdata)
            .arg("-l")
            .arg(with_suffix(pgdata, ".log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -c port={port} \
                 -c unix_socket_directories='{}' -c fsync=off -c full_page_writes=off{}",
                dir.display(),
                self.monitor_db_settings
                    .iter()
                    .map(|setting| format!(" -c {setting}"))
                    .collect::<String>()
            ))
            .arg("start")
            .stdin(Stdio::null());
        run_checked(pg_ctl, &format!("pg_ctl start of {what}")).await?;
        Ok(())
    }

    pub(super) fn state_request(&self) -> GetFormationStateRequest {
        GetFormationStateRequest {
            formation: self.formation.clone(),
        }
    }

    pub(super) fn add_node(&mut self, i: usize, opts: &ClusterOptions) -> Result<()> {
        let name = format!("node{i}");
        let dir = self.root.join(&name);
        self.tools.make_dir(&dir)?;
        let port = free_port()?;
        let http_port = if opts.http { Some(free_port()?) } else { None };
        let pgdata = dir.join("data");
        if let (1, Some(existing)) = (i, &opts.first_node_pgdata) {
            fs::rename(existing, &pgdata)
                .with_context(|| format!("moving {} into node1's place", existing.display()))?;
        }
        let config = dir.join("keeper.toml");
        let monitor_link = if opts.monitor_link_proxies {
            if self.monitors.len() > 1 {
                bail!("monitor_link_proxies proxy the link to one monitor: use them with one");
            }
            Some(Proxy::start(self.monitors[0].port)?)
        } else {
            None
        };
        let ingress = if opts.ingress_proxies {
            Some(Proxy::start(port)?)
        } else {
            None
        };
        let keeper = KeeperToml {
            name: name.clone(),
            formation: self.formation.clone(),
            host: "127.0.0.1".to_string(),
            port,
            advertise_port: ingress.as_ref().map(Proxy::port),
            pgdata: pgdata.display().to_string(),
            monitor: match &monitor_link {
                Some(proxy) => vec![format!("http://127.0.0.1:{}", proxy.port())],
                None => self.monitor_urls(),
            },
            pg_bin_dir: self.tools.pg_bin_dir.display().to_string(),
            pg_user: "postgres".to_string(),
            candidate_priority: opts.candidate_priorities.get(i - 1).copied(),
            replication_quorum: opts.replication_quorums.get(i - 1).copied(),
            apply_delay: opts.apply_delays.get(i - 1).cloned().flatten(),
            register_timeout: None,
        };
        let mut text = keeper.render()?;
        text.push_str(&self.keeper_security_toml(&name));
        if opts.postgres_tls {
            let tls = self
                .tls
                .as_ref()
                .context("postgres_tls needs a security mode other than plaintext")?;
            text.push_str(&tls.postgres_toml(&name));
        }
        if let Some((_, path)) = &self.replication_password {
            text.push_str(&format!(
                "replication_password_file = {:?}\ntrust_networks = [\"127.0.0.1/32\"]\n",
                path.display().to_string()
            ));
        }
        if let Some(p) = http_port {
            text.push_str(&format!("http_listen = \"127.0.0.1:{p}\"\n"));
        }
        text.push_str(&format!(
            "on_role_change = {:?}\nbefore_promotion = {:?}\n",
            self.role_change_hook()?.display().to_string(),
            self.promotion_hook()?.display().to_string()
        ));
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        self.nodes.push(Node {
            keeper_log: dir.join("keeper.log"),
            name,
            port,
            dir,
            pgdata,
            config,
            keeper: Mutex::new(None),
            http_port,
            monitor_link,
            ingress,
        });
        Ok(())
    }

    /// The keepers' `on_role_change` hook: a stand-in virtual IP, the
    /// file `hooks/vip` naming the node that last became primary, and a
    /// line per role change in `hooks/role-changes.log`.
    fn role_change_hook(&self) -> Result<std::path::PathBuf> {
        self.hook_script(
            "role-change.sh",
            "# Stand-in virtual IP: the file vip names the node that takes writes.\n\
             echo \"$PGPILOT_NODE $PGPILOT_OLD_ROLE -> $PGPILOT_NEW_ROLE ($PGPILOT_OLD_STATE -> $PGPILOT_NEW_STATE)\" >> \"$dir/role-changes.log\"\n\
             if [ \"$PGPILOT_NEW_ROLE\" = primary ]; then\n\
             \techo \"$PGPILOT_NODE\" > \"$dir/vip.tmp\" && mv \"$dir/vip.tmp\" \"$dir/vip\"\n\
             fi\n",
        )
    }

    /// The keepers' `before_promotion` hook: it refuses while the file
    /// `hooks/refuse-<node>` exists (see [`Cluster::refuse_promotion`]),
    /// and writes a line per answer in `hooks/promotions.log`.
    fn promotion_hook(&self) -> Result<std::path::PathBuf> {
        self.hook_script(
            "before-promotion.sh",
            "if [ -e \"$dir/refuse-$PGPILOT_NODE\" ]; then\n\
             \techo \"$PGPILOT_NODE refused ($PGPILOT_OLD_STATE, new role $PGPILOT_NEW_ROLE)\" >> \"$dir/promotions.log\"\n\
             \texit 1\n\
             fi\n\
             echo \"$PGPILOT_NODE accepted ($PGPILOT_OLD_STATE, new role $PGPILOT_NEW_ROLE)\" >> \"$dir/promotions.log\"\n",
        )
    }

    /// The executable script `hooks/<file>` (written once per cluster):
    /// `body` runs with `$dir` set to the hooks directory.
    fn hook_script(&self, file: &str, body: &str) -> Result<std::path::PathBuf> {
        let dir = self.root.join("hooks");
        let script = dir.join(file);
        if !script.exists() {
            self.tools.make_dir(&dir)?;
            let text = format!("#!/bin/sh\ndir={:?}\n{body}", dir.display().to_string());
            fs::write(&script, text).with_context(|| format!("writing {}", script.display()))?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
        }
        Ok(script)
    }

    /// Make node `name`'s `before_promotion` hook refuse (or accept again).
    pub fn refuse_promotion(&self, name: &str, refuse: bool) -> Result<()> {
        self.node(name)?;
        let flag = self.root.join("hooks").join(format!("refuse-{name}"));
        if refuse {
            fs::write(&flag, "").with_context(|| format!("writing {}", flag.display()))
        } else {
            match fs::remove_file(&flag) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("removing {}", flag.display()))
                }
                _ => Ok(()),
            }
        }
    }

    /// The lines the `before_promotion` hooks wrote so far.
    pub fn promotion_answers(&self) -> Vec<String> {
        fs::read_to_string(self.root.join("hooks").join("promotions.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub(super) fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node named {name:?} in this cluster"))
    }

    /// The node `name` and its keeper's slot, which holds no running
    /// keeper (an error says so when one runs).
    pub(super) fn idle_keeper(&self, name: &str) -> Result<(&Node, MutexGuard<'_, Option<Child>>)> {
        let node = self.node(name)?;
        let mut slot = lock(&node.keeper);
        if let Some(child) = slot.as_mut() {
            if child.try_wait()?.is_none() {
                bail!(
                    "the keeper of {name} is already running (pid {})",
                    child.id()
                );
            }
        }
        Ok((node, slot))
    }

    pub(super) fn spawn_keeper_of(&self, name: &str) -> Result<()> {
        let (node, mut slot) = self.idle_keeper(name)?;
        let log = open_log(&node.keeper_log, "starting the keeper")?;
        let mut cmd = self.tools.keeper_command(&node.config, &node.dir);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.tools.keeper.display()))?;
        *slot = Some(child);
        Ok(())
    }
}
