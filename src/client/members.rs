//! `bank member`: the cluster's membership as an operator reads and changes it, over
//! `bank.admin.v1.Members` at any branch (the leader makes each change). Like status, it is
//! the operator's business: on a TLS cluster it needs the cluster's certificate.

use std::time::Duration;

use serde::Serialize;
use tonic::transport::ClientTlsConfig;

use super::status::connect;
use super::{Asked, Cause, ClientError};
use crate::proto::admin::members_client::MembersClient;
use crate::proto::admin::{
    AddMemberRequest, ListMembersRequest, PromoteMemberRequest, RemoveMemberRequest,
};
use crate::BranchId;

/// Bound on one membership call: a change waits for the leader to commit it, and a removal
/// first asks the remaining voters whether they are up.
pub const MEMBERS_DEADLINE: Duration = Duration::from_secs(20);

/// One branch of the membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: BranchId,
    pub address: String,
    pub voter: bool,
}

/// The membership, as one branch knows it.
#[derive(Debug, Clone, Serialize)]
pub struct Members {
    /// The branch that answered.
    pub answered_by: BranchId,
    pub leader: Option<BranchId>,
    pub members: Vec<Member>,
    /// The log index of the change just made (absent for a listing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
}

/// A change to make.
#[derive(Debug, Clone)]
pub enum Change {
    Add { id: BranchId, address: String },
    Promote { id: BranchId },
    Remove { id: BranchId },
}

fn members_of(list: Vec<crate::proto::admin::Member>) -> Vec<Member> {
    list.into_iter()
        .map(|member| Member {
            id: member.id,
            address: member.address,
            voter: member.voter,
        })
        .collect()
}

/// The branch (or the leader behind it) refused: its words say why; nothing changed.
fn refused(addr: &str, tls: Option<&ClientTlsConfig>, status: &tonic::Status) -> ClientError {
    ClientError::Refused {
        asked: Asked::Members,
        cause: Cause::status(addr, status, Some(tls.is_some())),
    }
}

/// The membership as the branch at `addr` knows it.
pub async fn list(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Members, ClientError> {
    let answered = tokio::time::timeout(MEMBERS_DEADLINE, async {
        let mut client = MembersClient::new(connect(addr, tls, Asked::Members).await?);
        let mut request = tonic::Request::new(ListMembersRequest {});
        request.set_timeout(MEMBERS_DEADLINE);
        let reply = client
            .list_members(request)
            .await
            .map_err(|status| refused(addr, tls, &status))?;
        let reply = reply.into_inner();
        Ok(Members {
            answered_by: reply.answered_by,
            leader: reply.leader,
            members: members_of(reply.members),
            log_index: None,
        })
    })
    .await;
    answered.unwrap_or_else(|_| {
        Err(ClientError::Unreachable {
            asked: Asked::Members,
            cause: Cause::no_answer(addr, MEMBERS_DEADLINE),
            deadline: MEMBERS_DEADLINE,
            attempts: 1,
        })
    })
}

/// Makes `change` through the branch at `addr`; the membership after it. No answer within
/// [`MEMBERS_DEADLINE`]: the change's outcome is unknown.
pub async fn change(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
    change: Change,
) -> Result<Members, ClientError> {
    let answered = tokio::time::timeout(MEMBERS_DEADLINE, async {
        let mut client = MembersClient::new(connect(addr, tls, Asked::Members).await?);
        let reply = match change {
            Change::Add { id, address } => {
                let mut request = tonic::Request::new(AddMemberRequest { id, address });
                request.set_timeout(MEMBERS_DEADLINE);
                client.add_member(request).await
            }
            Change::Promote { id } => {
                let mut request = tonic::Request::new(PromoteMemberRequest { id });
                request.set_timeout(MEMBERS_DEADLINE);
                client.promote_member(request).await
            }
            Change::Remove { id } => {
                let mut request = tonic::Request::new(RemoveMemberRequest { id });
                request.set_timeout(MEMBERS_DEADLINE);
                client.remove_member(request).await
            }
        };
        let reply = reply
            .map_err(|status| refused(addr, tls, &status))?
            .into_inner();
        let listed = list(addr, tls).await?;
        Ok(Members {
            members: members_of(reply.members),
            log_index: Some(reply.log_index),
            ..listed
        })
    })
    .await;
    answered.unwrap_or_else(|_| {
        Err(ClientError::OutcomeUnknown {
            asked: Asked::Members,
            cause: Cause::no_answer(addr, MEMBERS_DEADLINE),
            deadline: MEMBERS_DEADLINE,
            attempts: 1,
        })
    })
}

/// The membership as a table: one line per branch.
pub fn render_table(members: &Members) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:<24}  {:<8}  leader",
        "branch", "address", "role"
    );
    for member in &members.members {
        let role = if member.voter { "voter" } else { "learner" };
        let leads = if members.leader == Some(member.id) {
            "*"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>6}  {:<24}  {:<8}  {leads}",
            member.id, member.address, role
        );
    }
    out
}
