//! `ferrid audit …`: verify, query and witness the server's audit log, offline (the
//! files are read directly; no server is needed, and a running one is not disturbed).
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ferrid_audit::{AuditRecord, RecordKind, VerifyOptions};

/// `ferrid audit …`
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCmd {
    /// Check the hash chain, every checkpoint's signature, the head file and (with
    /// `--checkpoint`) a checkpoint kept elsewhere. Fails on any problem, naming the
    /// line and byte offset.
    Verify(VerifyArgs),
    /// Print matching records as JSON lines, oldest first.
    Query(QueryArgs),
    /// Print the latest signed checkpoint (the head file), after checking it against the
    /// log. Keep its output outside the server (`--checkpoint` of `verify` takes it) to
    /// detect a rollback of the whole directory.
    Checkpoint(Location),
}

/// Where the audit log is.
#[derive(Debug, Args)]
pub(crate) struct Location {
    /// The audit directory.
    #[arg(long, conflicts_with = "config")]
    dir: Option<PathBuf>,
    /// The server's configuration: its `[audit] dir`, or `<data_dir>/audit`.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl Location {
    fn dir(&self) -> Result<PathBuf> {
        if let Some(d) = &self.dir {
            return Ok(d.clone());
        }
        match &self.config {
            Some(path) => {
                let cfg = ferrid_server::config::ServerConfig::load(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok(cfg.raw.audit.dir(&cfg.raw.data_dir))
            }
            None => Ok(PathBuf::from(ferrid_server::config::DEFAULT_DATA_DIR).join("audit")),
        }
    }
}

/// Arguments of `ferrid audit verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    loc: Location,
    /// The audit public key (PEM) to check signatures with. Default: the one in the audit
    /// directory, which whoever can rewrite the log can replace too; pass a copy kept
    /// elsewhere.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// A checkpoint kept elsewhere (`ferrid audit checkpoint`'s output): the log must
    /// still hold exactly what it sealed.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
}

/// Arguments of `ferrid audit query`.
#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    #[command(flatten)]
    loc: Location,
    /// Records about this SPIFFE ID (the caller's or the credential's).
    #[arg(long)]
    spiffe_id: Option<String>,
    /// Records for this task.
    #[arg(long)]
    task: Option<String>,
    /// Records at or after this time (RFC 3339, or Unix seconds).
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Records before this time (RFC 3339, or Unix seconds).
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
    /// Records of this kind: attestation, issuance, exchange, denial, revocation.
    #[arg(long)]
    kind: Option<RecordKind>,
}

fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("{s:?} is neither RFC 3339 nor Unix seconds: {e}"))
}

impl QueryArgs {
    fn matches(&self, r: &AuditRecord) -> bool {
        self.spiffe_id
            .as_ref()
            .is_none_or(|id| r.who.spiffe_id == *id || r.what.spiffe_id.as_ref() == Some(id))
            && self.task.as_ref().is_none_or(|t| r.what.task_id.as_ref() == Some(t))
            && self.since.is_none_or(|s| r.time >= s)
            && self.until.is_none_or(|u| r.time < u)
            && self.kind.is_none_or(|k| r.kind == k)
    }
}

pub(crate) fn run(cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::Verify(args) => verify(args),
        AuditCmd::Query(args) => query(args),
        AuditCmd::Checkpoint(loc) => checkpoint(loc),
    }
}

fn verify(args: VerifyArgs) -> Result<()> {
    let dir = args.loc.dir()?;
    let opts = VerifyOptions {
        public_key: args.public_key,
        checkpoint: args.checkpoint,
        last_signature_only: false,
    };
    let r = ferrid_audit::verify(&dir, &opts).with_context(|| format!("verifying {}", dir.display()))?;
    if let Some(t) = &r.unsealed {
        println!(
            "note: {} bytes ({} complete records{}) after the last checkpoint at byte {} are unsealed: never acknowledged (a crash mid-commit, or a commit in progress); the server cuts them off when it opens the log",
            t.bytes,
            t.records,
            if t.torn { ", ending in a torn line" } else { "" },
            t.offset
        );
    }
    if !r.is_ok() {
        for p in &r.problems {
            eprintln!("{}: {p}", dir.display());
        }
        bail!(
            "the audit log in {} fails verification: {} problem(s), first: {}",
            dir.display(),
            r.problems.len(),
            r.problems[0]
        );
    }
    println!(
        "{}: OK — {} records, {} checkpoints, all signed by key {}{}",
        dir.display(),
        r.records,
        r.checkpoints,
        r.key_id,
        r.head
            .map(|h| format!("; head file at record {}", h.size))
            .unwrap_or_else(|| "; no head file".into())
    );
    Ok(())
}

fn query(args: QueryArgs) -> Result<()> {
    let dir = args.loc.dir()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut err = None;
    let skipped = ferrid_audit::records(&dir, 0, None, |r| {
        if err.is_none() && args.matches(&r) {
            use std::io::Write as _;
            if let Err(e) = serde_json::to_writer(&mut out, &r)
                .map_err(anyhow::Error::from)
                .and_then(|()| Ok(writeln!(out)?))
            {
                err = Some(e);
            }
        }
    })
    .with_context(|| format!("reading {}", dir.display()))?;
    if let Some(e) = err {
        return Err(e);
    }
    if skipped > 0 {
        eprintln!("warning: {skipped} unreadable line(s) skipped; run `ferrid audit verify`");
    }
    Ok(())
}

fn checkpoint(loc: Location) -> Result<()> {
    let dir = loc.dir()?;
    let opts = VerifyOptions { last_signature_only: true, ..Default::default() };
    let r = ferrid_audit::verify(&dir, &opts).with_context(|| format!("verifying {}", dir.display()))?;
    if !r.is_ok() {
        bail!("the audit log in {} fails verification: {}", dir.display(), r.problems[0]);
    }
    let head = ferrid_audit::read_checkpoint_file(&dir.join(ferrid_audit::HEAD_FILE))?
        .with_context(|| format!("{} has no head file yet (nothing recorded)", dir.display()))?;
    println!("{}", String::from_utf8_lossy(&head.to_line()));
    Ok(())
}
