//! A deterministic simulation of pgpilot: the real monitor state machine
//! (`pgpilot_monitor::fsm`), the real keeper transition plans and fence rule
//! (`pgpilot_keeper::plan`, `pgpilot_keeper::agent::fence_step`), driven on
//! a virtual clock with simulated PostgreSQL servers, WAL streaming with
//! `ANY n` synchronous acknowledgement, a client, crashes, partitions and
//! message loss, all drawn from one seed. The safety invariants of DESIGN §5
//! are checked after every event.

pub mod monitor;
pub mod rng;
pub mod world;

/// Virtual time, in milliseconds since the start of a run.
pub type Ms = u64;

pub use monitor::MonitorFlaw;
pub use world::{run, KeeperFlaw, Options, RunReport, Stats, Violation};

impl RunReport {
    /// The failure report: seed, setup, the broken invariant, the last
    /// events and the final state.
    pub fn explain(&self) -> String {
        let mut out = format!("seed {}: {}\n", self.seed, self.setup);
        if let Some(v) = &self.violation {
            out.push_str(&format!(
                "invariant {} broken at {:.3} s: {}\n",
                v.invariant,
                v.at as f64 / 1000.0,
                v.what
            ));
        }
        out.push_str("trace (latest last):\n");
        for line in &self.trace {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("state:\n");
        for line in self.state.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!(
            "replay: cargo run --release -p pgpilot-sim -- --seed {}\n",
            self.seed
        ));
        out
    }
}
