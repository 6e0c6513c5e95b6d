//! Several monitor processes over the one monitor database: starting each
//! with its own config and log, the harness's client of the first one
//! running, which one holds the lease, and killing or restarting one.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tonic::transport::Channel;

use crate::process::{self, free_port};
use crate::wait::poll_until;

use super::options::{ClusterOptions, MonitorToml};
use super::spawn::MONITOR_START_TIMEOUT;
use super::{lock, open_log, Cluster};

/// One `pgpilot-monitor run` process of the cluster.
pub(super) struct MonitorProc {
    pub(super) port: u16,
    pub(super) url: String,
    pub(super) config: PathBuf,
    pub(super) log: PathBuf,
    pub(super) metrics_port: Option<u16>,
    pub(super) child: Mutex<Option<Child>>,
    /// The harness's (lazy) channel to it, as the operator.
    pub(super) channel: Option<Channel>,
}

impl MonitorProc {
    /// Monitor `i` (0 first) of a cluster in `root`: its port, files and
    /// plaintext URL (`set_up_security` turns it to https://).
    pub(super) fn new(root: &std::path::Path, i: usize, http: bool) -> Result<MonitorProc> {
        let port = free_port()?;
        let stem = if i == 0 {
            "monitor".to_string()
        } else {
            format!("monitor{}", i + 1)
        };
        Ok(MonitorProc {
            port,
            url: format!("http://127.0.0.1:{port}"),
            config: root.join(format!("{stem}.toml")),
            log: root.join(format!("{stem}.log")),
            metrics_port: if http { Some(free_port()?) } else { None },
            child: Mutex::new(None),
            channel: None,
        })
    }

    fn running(&self) -> bool {
        lock(&self.child)
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Cluster {
    /// The URL of every monitor, the first first (what keepers are given).
    pub fn monitor_urls(&self) -> Vec<String> {
        self.monitors.iter().map(|m| m.url.clone()).collect()
    }

    /// How many monitor processes the cluster has (running or not).
    pub fn monitor_count(&self) -> usize {
        self.monitors.len()
    }

    /// Process id of monitor `i`, None once stopped.
    pub fn monitor_pid_at(&self, i: usize) -> Option<u32> {
        lock(&self.monitor_proc(i).ok()?.child)
            .as_ref()
            .map(Child::id)
    }

    /// The log file of monitor `i`.
    pub fn monitor_log(&self, i: usize) -> Result<PathBuf> {
        Ok(self.monitor_proc(i)?.log.clone())
    }

    fn monitor_proc(&self, i: usize) -> Result<&MonitorProc> {
        self.monitors
            .get(i)
            .ok_or_else(|| anyhow!("no monitor {i}: this cluster has {}", self.monitors.len()))
    }

    /// Write every monitor's config, start them all and wait until each
    /// answers. A monitor that could not bind a port picked by
    /// [`free_port`] (another test took it in the meantime) is started
    /// again on fresh ports, twice at most.
    pub(super) async fn start_monitors(&mut self, opts: &ClusterOptions) -> Result<()> {
        for i in 0..self.monitors.len() {
            self.write_monitor_config(i, opts)?;
            self.spawn_monitor(i)?;
        }
        for i in 0..self.monitors.len() {
            let mut attempts = 1;
            loop {
                let Err(e) = self.wait_monitor_answers(i).await else {
                    break;
                };
                let log = fs::read_to_string(&self.monitors[i].log).unwrap_or_default();
                if attempts == 3 || !log.contains("Address already in use") {
                    return Err(e);
                }
                attempts += 1;
                let m = &mut self.monitors[i];
                let scheme = m.url.split("://").next().unwrap_or("http").to_string();
                m.port = free_port()?;
                m.url = format!("{scheme}://127.0.0.1:{}", m.port);
                if m.metrics_port.is_some() {
                    m.metrics_port = Some(free_port()?);
                }
                self.write_monitor_config(i, opts)?;
                self.spawn_monitor(i)?;
            }
        }
        Ok(())
    }

    /// Monitor `i`'s configuration file, and the harness's channel to it.
    fn write_monitor_config(&mut self, i: usize, opts: &ClusterOptions) -> Result<()> {
        let database_url = self.monitors_database_url();
        let m = &self.monitors[i];
        let config = MonitorToml {
            database_url,
            metrics_listen: m.metrics_port.map(|p| format!("127.0.0.1:{p}")),
            listen: format!("127.0.0.1:{}", m.port),
            advertise_url: Some(m.url.clone()),
            node_timeout: opts.node_timeout.clone(),
            health_check_interval: opts.health_check_interval.clone(),
        };
        let text = toml::to_string(&config)? + &self.monitor_security_toml();
        fs::write(&m.config, text).with_context(|| format!("writing {}", m.config.display()))?;
        restrict(&m.config)?;
        let channel = self
            .endpoint_of(&m.url)?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        self.monitors[i].channel = Some(channel);
        Ok(())
    }

    pub(super) fn spawn_monitor(&self, i: usize) -> Result<()> {
        let m = self.monitor_proc(i)?;
        let log = open_log(&m.log, "starting the monitor")?;
        let mut cmd = self.tools.monitor_command();
        cmd.arg("run")
            .arg("--config")
            .arg(&m.config)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.tools.monitor.display()))?;
        *lock(&m.child) = Some(child);
        Ok(())
    }

    pub(super) async fn wait_monitor_answers(&self, i: usize) -> Result<()> {
        let channel = self
            .monitor_proc(i)?
            .channel
            .clone()
            .ok_or_else(|| anyhow!("monitor {i} is not started"))?;
        let credentials = self.credentials()?;
        let this: &Cluster = self;
        poll_until(
            MONITOR_START_TIMEOUT,
            &format!("monitor {i} to answer GetFormationState"),
            || {
                let mut client =
                    pgpilot_proto::security::client(channel.clone(), credentials.clone());
                async move {
                    this.check_processes()?;
                    let answer = client.get_formation_state(this.state_request()).await;
                    // Unknown/Internal: something else on the port (a
                    // server that does not speak gRPC), not our monitor.
                    let not_yet = [
                        tonic::Code::Unavailable,
                        tonic::Code::Unknown,
                        tonic::Code::Internal,
                    ];
                    match answer {
                        Err(status) if not_yet.contains(&status.code()) => {
                            Err(anyhow!("{}", status.message()))
                        }
                        // Answered, even if only to say the formation has no node yet.
                        _ if this.monitors[i].running() => Ok(Some(())),
                        _ => Err(anyhow!("monitor {i} exited")),
                    }
                }
            },
        )
        .await
    }

    /// The harness's client: of the first monitor that runs.
    pub(super) fn client(&self) -> Result<pgpilot_proto::security::Client> {
        let channel = self
            .monitors
            .iter()
            .find(|m| m.running())
            .or_else(|| self.monitors.first())
            .and_then(|m| m.channel.clone())
            .ok_or_else(|| anyhow!("the monitor is not started"))?;
        Ok(pgpilot_proto::security::client(
            channel,
            self.credentials()?,
        ))
    }

    /// A client of monitor `i` alone, as the operator.
    pub fn client_of(&self, i: usize) -> Result<pgpilot_proto::security::Client> {
        let channel = self
            .monitor_proc(i)?
            .channel
            .clone()
            .ok_or_else(|| anyhow!("monitor {i} is not started"))?;
        Ok(pgpilot_proto::security::client(
            channel,
            self.credentials()?,
        ))
    }

    /// Whether the harness ever started a monitor (its diagnostics ask one).
    pub(super) fn monitor_started(&self) -> bool {
        self.monitors.iter().any(|m| m.channel.is_some())
    }

    /// The index of the monitor holding the lease on the background
    /// duties, as show-state says; None while nobody holds it.
    pub async fn lease_holder(&self) -> Result<Option<usize>> {
        let state = self.state().await?;
        Ok(state
            .monitors
            .iter()
            .find(|m| m.holds_lease)
            .and_then(|holder| self.monitors.iter().position(|m| m.url == holder.url)))
    }

    /// SIGKILL monitor `i` (its process group); returns when it is gone.
    pub fn kill_monitor_at(&self, i: usize) -> Result<Instant> {
        let m = self.monitor_proc(i)?;
        let mut child = lock(&m.child)
            .take()
            .ok_or_else(|| anyhow!("monitor {i} is not running"))?;
        let pid = child.id();
        process::kill_child_group(&mut child);
        let gone_at = Instant::now();
        self.mark_log(&m.log, &format!("monitor pid {pid} killed (SIGKILL)"));
        Ok(gone_at)
    }

    /// Stop monitor `i` cleanly (SIGTERM; it lets its lease go); returns
    /// when it has exited.
    pub async fn stop_monitor_at(&self, i: usize) -> Result<()> {
        let m = self.monitor_proc(i)?;
        let child = lock(&m.child)
            .take()
            .ok_or_else(|| anyhow!("monitor {i} is not running"))?;
        super::teardown::stop_gracefully(child).await;
        self.mark_log(&m.log, "monitor stopped (SIGTERM)");
        Ok(())
    }

    /// Start monitor `i` again with the same configuration and wait until
    /// it answers.
    pub async fn restart_monitor_at(&self, i: usize) -> Result<()> {
        if lock(&self.monitor_proc(i)?.child).is_some() {
            bail!("monitor {i} is already running");
        }
        self.spawn_monitor(i)?;
        self.wait_monitor_answers(i).await
    }

    /// Every monitor that should run still runs.
    pub(super) fn check_monitors(&self) -> Result<(), String> {
        for (i, m) in self.monitors.iter().enumerate() {
            if let Some(child) = lock(&m.child).as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("monitor {i} exited ({status})"));
                }
            }
        }
        Ok(())
    }

    /// One line per monitor process, for diagnostics.
    pub(super) fn monitor_status_lines(
        &self,
        describe: impl Fn(&Mutex<Option<Child>>) -> String,
    ) -> String {
        self.monitors
            .iter()
            .enumerate()
            .map(|(i, m)| format!("monitor {i} ({}): {}\n", m.url, describe(&m.child)))
            .collect()
    }

    /// Take every monitor's child process (teardown).
    pub(super) fn take_monitor_children(&self) -> Vec<Child> {
        self.monitors
            .iter()
            .filter_map(|m| lock(&m.child).take())
            .collect()
    }
}

/// A monitor config may hold the database password: only its owner reads it.
fn restrict(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))
}
