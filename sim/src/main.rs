//! `pgpilot-sim --seed N` replays one seed with its whole trace;
//! `pgpilot-sim --seeds N` runs a batch and prints seeds per second.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use pgpilot_sim::{run, KeeperFlaw, MonitorFlaw, Options};

/// Deterministic simulation of pgpilot under faults, with invariant checks.
#[derive(Parser, Debug)]
#[command(
    name = "pgpilot-sim",
    after_help = "Examples:\n  pgpilot-sim --seed 42          replay seed 42 and print its trace\n  pgpilot-sim --seeds 100000     run seeds 0..100000 and report failures"
)]
struct Args {
    /// Replay exactly this seed and print every event of the run.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds (from --first) and print seeds per second.
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed of a batch.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Virtual length of the fault phase of each run, in milliseconds.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1000..=3_600_000))]
    fault_ms: u64,
    /// Run with a deliberately broken rule, to see the checks fail.
    #[arg(long, value_enum, default_value_t = Flaw::None)]
    flaw: Flaw,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Flaw {
    None,
    /// The monitor promotes without the fence rule (no deadline, no quorum of reports).
    SkipFenceRule,
    /// The keeper never fences.
    NoFence,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut opts = Options {
        fault_ms: args.fault_ms,
        ..Options::default()
    };
    match args.flaw {
        Flaw::None => {}
        Flaw::SkipFenceRule => opts.monitor_flaw = MonitorFlaw::SkipFenceRule,
        Flaw::NoFence => opts.keeper_flaw = KeeperFlaw::NoFence,
    }
    if let Some(seed) = args.seed {
        opts.full_trace = true;
        let report = run(seed, opts);
        print!("{}", report.explain());
        let s = &report.stats;
        println!(
            "virtual {:.1} s, {} events, {} writes ({} acknowledged, {} under synchronous replication), {} promotions ({} refused by a hook), {} fences, {} faults, operator commands {} done / {} refused",
            report.virtual_ms as f64 / 1000.0,
            s.events,
            s.writes,
            s.acked,
            s.acked_sync,
            s.promotions,
            s.refusals,
            s.fences,
            s.faults,
            s.operator_ok,
            s.operator_refused
        );
        return match report.violation {
            None => {
                println!("seed {seed}: every invariant held");
                ExitCode::SUCCESS
            }
            Some(_) => ExitCode::FAILURE,
        };
    }
    let count = args.seeds.unwrap_or(1000);
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut virtual_ms = 0u64;
    let (mut promotions, mut refusals, mut acked_sync) = (0u64, 0u64, 0u64);
    let (mut max_settle, mut forced) = ((0, 0), 0u64);
    for seed in args.first..args.first + count {
        let report = run(seed, opts);
        virtual_ms += report.virtual_ms;
        promotions += report.stats.promotions;
        refusals += report.stats.refusals;
        acked_sync += report.stats.acked_sync;
        max_settle = max_settle.max((report.stats.settle_ms, seed));
        forced += u64::from(report.stats.forced);
        let Some(v) = &report.violation else {
            continue;
        };
        println!(
            "seed {seed}: invariant {} broken at {:.3} s: {}",
            v.invariant,
            v.at as f64 / 1000.0,
            v.what
        );
        if failures.is_empty() {
            print!("{}", report.explain());
        }
        failures.push(seed);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "slowest to settle after the faults: {:.1} s (seed {}); {forced} stuck elections forced by the operator",
        max_settle.0 as f64 / 1000.0,
        max_settle.1
    );
    println!(
        "{count} seeds in {secs:.1} s ({:.0} seeds/s), {:.1} virtual hours, {promotions} promotions ({refusals} refused by a hook), {acked_sync} writes acknowledged under synchronous replication; {} seeds broke an invariant{}",
        count as f64 / secs,
        virtual_ms as f64 / 3_600_000.0,
        failures.len(),
        if failures.is_empty() {
            String::new()
        } else {
            format!(": {:?}", &failures[..failures.len().min(20)])
        }
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
