//! `ferrid policy …`: check Cedar policies offline, before the server loads them.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ferrid_policy::PolicySet;

use crate::output::Output;

/// `ferrid policy …`
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCmd {
    /// Parse and validate a `.cedar` file or a directory of them against Ferrid's schema.
    Validate {
        /// A `.cedar` file, or a directory whose `*.cedar` files are loaded together.
        path: PathBuf,
    },
    /// Run golden cases (`CASES.json`) against policies; fails if any case fails.
    Test(TestArgs),
}

/// Arguments of `ferrid policy test`.
#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// The policies: a `.cedar` file or a directory.
    #[arg(long)]
    policies: PathBuf,
    /// A JSON array of `{"name", "request", "expect": "allow"|"deny"}`.
    cases: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub(crate) fn run(cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Validate { path } => {
            let set = PolicySet::load(&path)
                .map_err(|e| anyhow::anyhow!("{}: invalid policy:\n{e}", path.display()))?;
            println!("{}: {} policies OK (hash {})", path.display(), set.len(), set.hash());
            Ok(())
        }
        PolicyCmd::Test(args) => test(args),
    }
}

fn test(args: TestArgs) -> Result<()> {
    let set = PolicySet::load(&args.policies)
        .map_err(|e| anyhow::anyhow!("{}: invalid policy:\n{e}", args.policies.display()))?;
    let cases =
        std::fs::read_to_string(&args.cases).with_context(|| format!("reading {}", args.cases.display()))?;
    let report = ferrid_policy::run_cases(&set, &cases).with_context(|| args.cases.display().to_string())?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            for r in &report.results {
                let got = if r.decision.allowed { "allow" } else { "deny" };
                let status = if r.passed { "ok  " } else { "FAIL" };
                let by = if r.decision.determining_policies.is_empty() {
                    "no permit applies".to_owned()
                } else {
                    r.decision.determining_policies.join(", ")
                };
                println!("{status} {} ({got}; {by})", r.name);
                if !r.passed {
                    let want = match r.expect {
                        ferrid_policy::Expect::Allow => "allow",
                        ferrid_policy::Expect::Deny => "deny",
                    };
                    println!("     expected {want}, got {got}");
                }
                for e in &r.decision.errors {
                    println!("     error: {e}");
                }
            }
            println!(
                "{} passed, {} failed (policy hash {})",
                report.passed, report.failed, report.policy_hash
            );
        }
    }
    if !report.all_passed() {
        bail!("{} of {} cases failed", report.failed, report.results.len());
    }
    Ok(())
}
