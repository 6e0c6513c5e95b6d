//! Running `pgpilot-monitor` operator commands against a test cluster, with
//! failures that show the command's output and the cluster's state.

use std::process::Output;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::Cluster;

/// Exit status, stdout and stderr of a finished command.
pub fn describe(output: &Output) -> String {
    format!(
        "exit status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `pgpilot-monitor <args> --monitor <this cluster's monitor>`, any exit status.
pub async fn cli(cluster: &Cluster, args: &[&str]) -> Result<Output> {
    let mut all = args.to_vec();
    all.extend(["--monitor", cluster.monitor_url()]);
    cluster.run_cli(&all).await
}

/// An operator command that must succeed; returns its stdout.
pub async fn cli_ok(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let output = cli(cluster, args).await?;
    if !output.status.success() {
        return Err(cluster
            .failure(format!(
                "pgpilot-monitor {} failed:\n{}",
                args.join(" "),
                describe(&output)
            ))
            .await);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// An operator command printing JSON (`show-settings --json`, …).
pub async fn cli_json(cluster: &Cluster, args: &[&str]) -> Result<Value> {
    let stdout = cli_ok(cluster, args).await?;
    serde_json::from_str(&stdout).with_context(|| {
        format!(
            "parsing the JSON of pgpilot-monitor {}: {stdout}",
            args.join(" ")
        )
    })
}

/// An operator command that must be refused with exit `code` (any non-zero
/// code when `None`) and a sentence on stderr containing every `needle`.
pub async fn cli_refused(
    cluster: &Cluster,
    args: &[&str],
    code: Option<i32>,
    needles: &[&str],
) -> Result<String> {
    let output = cli(cluster, args).await?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let code_ok = match code {
        Some(code) => output.status.code() == Some(code),
        None => !output.status.success() && output.status.code().is_some(),
    };
    if !code_ok || !needles.iter().all(|n| stderr.contains(n)) {
        return Err(cluster
            .failure(format!(
                "expected pgpilot-monitor {} to be refused with exit {} and a message \
                 containing {needles:?}\n{}",
                args.join(" "),
                code.map_or("non-zero".to_string(), |c| c.to_string()),
                describe(&output)
            ))
            .await);
    }
    eprintln!(
        "refused as expected ({}): pgpilot-monitor {}: {stderr}",
        output.status,
        args.join(" ")
    );
    Ok(stderr)
}
