//! `ferrid revoke …`: revoke credentials through the admin API (docs/revocation.md).
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use ferrid_proto::admin::v1 as pb;
use ferrid_proto::admin::v1::revoke_request::Target;

use crate::admin_client::{connect, status_err};
use crate::cli::AdminArgs;
use crate::output::Output;

/// `ferrid revoke`: exactly one target.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct RevokeArgs {
    #[command(subcommand)]
    cmd: Option<RevokeCmd>,
    /// One X.509-SVID, by serial (hex; colons allowed).
    #[arg(long, group = "target")]
    serial: Option<String>,
    /// One JWT by `jti`, and every token exchanged from it.
    #[arg(long, group = "target")]
    jti: Option<String>,
    /// Every credential issued for the entry's SPIFFE ID until now.
    #[arg(long, group = "target")]
    entry: Option<String>,
    /// Evict the agent, and revoke its SVID and every credential issued through it.
    #[arg(long, group = "target")]
    agent: Option<String>,
    /// Every credential recorded for the task, and what was exchanged from them.
    #[arg(long, group = "target")]
    task: Option<String>,
    /// Every delegation token acting for this principal (`sub`), and their descendants.
    #[arg(long, group = "target")]
    subject: Option<String>,
    /// Every credential issued for this SPIFFE ID until now.
    #[arg(long, group = "target")]
    spiffe_id: Option<String>,
    /// Why (recorded, and sent to relying parties).
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Debug, Subcommand)]
enum RevokeCmd {
    /// List the revocations in force.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

fn print(output: Output, txn: Option<&str>, revs: &[pb::RevocationInfo]) {
    match output {
        Output::Json => {
            let list: Vec<_> = revs
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "sequence": r.sequence, "id": r.id, "kind": r.kind, "value": r.value,
                        "spiffe_id": r.spiffe_id, "cutoff": r.cutoff, "revoked_at": r.revoked_at,
                        "expires_at": r.expires_at, "reason": r.reason, "txn": r.txn,
                    })
                })
                .collect();
            let doc = match txn {
                Some(t) => serde_json::json!({ "txn": t, "revocations": list }),
                None => serde_json::json!({ "revocations": list }),
            };
            println!("{doc}");
        }
        Output::Text => {
            if let Some(t) = txn {
                println!("Revoked {} credential(s) or ID(s) (operation {t}):", revs.len());
            }
            for r in revs {
                let holder = if r.spiffe_id.is_empty() || r.spiffe_id == r.value {
                    String::new()
                } else {
                    format!(" ({})", r.spiffe_id)
                };
                println!("  #{:<5} {:<9} {}{holder}  until {}", r.sequence, r.kind, r.value, r.expires_at);
            }
        }
    }
}

pub(crate) async fn run(a: RevokeArgs) -> Result<()> {
    if let Some(RevokeCmd::List { admin }) = a.cmd {
        let mut c = connect(&admin.admin_socket).await?;
        let r = c.list_revocations(pb::ListRevocationsRequest {}).await.map_err(status_err)?.into_inner();
        print(admin.output, None, &r.revocations);
        return Ok(());
    }
    let target = match (a.serial, a.jti, a.entry, a.agent, a.task, a.subject, a.spiffe_id) {
        (Some(v), ..) => Target::Serial(v),
        (_, Some(v), ..) => Target::Jti(v),
        (_, _, Some(v), ..) => Target::EntryId(v),
        (_, _, _, Some(v), ..) => Target::AgentId(v),
        (_, _, _, _, Some(v), ..) => Target::TaskId(v),
        (_, _, _, _, _, Some(v), _) => Target::Subject(v),
        (.., Some(v)) => Target::SpiffeId(v),
        _ => bail!(
            "name what to revoke: --serial, --jti, --entry, --agent, --task, --subject or --spiffe-id (or `ferrid revoke list`)"
        ),
    };
    let mut c = connect(&a.admin.admin_socket).await?;
    let r = c
        .revoke(pb::RevokeRequest { target: Some(target), reason: a.reason })
        .await
        .map_err(status_err)?
        .into_inner();
    print(a.admin.output, Some(&r.txn), &r.revocations);
    Ok(())
}
