//! A keeper's report of long work under way (a clone, a rewind), checked
//! when it arrives and kept in the node's row as JSON.

use pgpilot_proto::pb::WorkProgress;
use serde_json::{json, Value};

use crate::error::Error;

/// Longest `upstream` accepted ("host:port").
const MAX_UPSTREAM: usize = 300;

/// `work` as a keeper sent it, or why it is refused.
pub fn check(work: WorkProgress) -> Result<WorkProgress, Error> {
    if !matches!(
        work.work.as_str(),
        "clone" | "rewind" | "restore" | "recovery"
    ) {
        return Err(Error::InvalidArgument(format!(
            "work {:?} is not a kind of work the monitor knows: a keeper reports \"clone\", \"rewind\", \"restore\" or \"recovery\"",
            truncated(&work.work)
        )));
    }
    if work.upstream.len() > MAX_UPSTREAM {
        return Err(Error::InvalidArgument(format!(
            "the upstream of the {} under way is {} bytes long: at most {MAX_UPSTREAM}",
            work.work,
            work.upstream.len()
        )));
    }
    Ok(work)
}

fn truncated(s: &str) -> String {
    s.chars().take(40).collect()
}

pub fn to_json(w: &WorkProgress) -> String {
    json!({
        "work": w.work,
        "upstream": w.upstream,
        "done_bytes": w.done_bytes,
        "total_bytes": w.total_bytes,
        "rate_bytes_per_s": w.rate_bytes_per_s,
        "elapsed_ms": w.elapsed_ms,
        "idle_ms": w.idle_ms,
    })
    .to_string()
}

/// The stored report; `None` for text this monitor did not write.
pub fn from_json(text: &str) -> Option<WorkProgress> {
    let v: Value = serde_json::from_str(text).ok()?;
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(WorkProgress {
        work: v.get("work")?.as_str()?.to_string(),
        upstream: v
            .get("upstream")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        done_bytes: n("done_bytes"),
        total_bytes: n("total_bytes"),
        rate_bytes_per_s: n("rate_bytes_per_s"),
        elapsed_ms: n("elapsed_ms"),
        idle_ms: n("idle_ms"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WorkProgress {
        WorkProgress {
            work: "clone".into(),
            upstream: "10.0.0.5:5432".into(),
            done_bytes: 1_200_000_000,
            total_bytes: 3_000_000_000,
            rate_bytes_per_s: 110_000_000,
            elapsed_ms: 11_000,
            idle_ms: 0,
        }
    }

    #[test]
    fn stored_work_reads_back_as_sent() {
        assert_eq!(from_json(&to_json(&sample())), Some(sample()));
        assert_eq!(from_json("not json"), None);
        assert_eq!(from_json("{}"), None);
    }

    #[test]
    fn unknown_work_and_oversized_upstreams_are_refused() {
        assert!(check(sample()).is_ok());
        let odd = WorkProgress {
            work: "vacuum".into(),
            ..sample()
        };
        let e = check(odd).unwrap_err().to_string();
        assert!(e.contains("\"vacuum\"") && e.contains("clone"), "{e}");
        let long = WorkProgress {
            upstream: "h".repeat(400),
            ..sample()
        };
        assert!(check(long).unwrap_err().to_string().contains("at most 300"));
    }
}
