//! `bank.admin.v1.Members`: the cluster's membership at runtime, for operators (`bank member`)
//! and joining branches (`bank branch --join`). Each change is handed to the [`Branch`], which
//! has the leader check and make it ([`crate::node::MemberChange`]). Guarded like the peer
//! service: with TLS on, callers present the cluster's certificate.

use tonic::{Request, Response, Status};

use super::error::ServiceError;
use crate::node::{Branch, MemberChange, Membership};
use crate::proto::admin::{
    AddMemberRequest, ListMembersReply, ListMembersRequest, Member, MembershipChanged,
    PromoteMemberRequest, RemoveMemberRequest,
};

/// Membership at runtime.
pub struct MembersService {
    pub(super) branch: Branch,
}

impl MembersService {
    /// The members as this branch knows them now.
    fn members(&self) -> Vec<Member> {
        members_of(&self.branch.membership())
    }

    async fn change(&self, change: MemberChange) -> Result<Response<MembershipChanged>, Status> {
        let changed = self
            .branch
            .change_members(&change)
            .await
            .map_err(|e| Status::from(ServiceError::from(e)))?;
        Ok(Response::new(MembershipChanged {
            log_index: changed.log_index,
            members: members_of(&changed.membership),
        }))
    }
}

/// The members of `membership`, as the API lists them.
fn members_of(membership: &Membership) -> Vec<Member> {
    membership
        .each()
        .map(|(id, address, voter)| Member {
            id,
            address: address.to_string(),
            voter,
        })
        .collect()
}

#[tonic::async_trait]
impl crate::proto::admin::members_server::Members for MembersService {
    async fn list_members(
        &self,
        _request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersReply>, Status> {
        Ok(Response::new(ListMembersReply {
            members: self.members(),
            leader: self.branch.view().leader,
            answered_by: self.branch.id,
        }))
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<MembershipChanged>, Status> {
        let AddMemberRequest { id, address } = request.into_inner();
        if id == 0 {
            return Err(ServiceError::InvalidRequest(
                "a branch id is a positive integer".to_string(),
            )
            .into());
        }
        if let Err(e) = crate::rpc::endpoint(
            &address,
            &crate::rpc::EndpointConfig::plaintext(std::time::Duration::from_secs(1)),
        ) {
            return Err(ServiceError::InvalidRequest(format!(
                "{address:?} is not a branch address (HOST:PORT): {}",
                e.reason
            ))
            .into());
        }
        self.change(MemberChange::Add { id, address }).await
    }

    async fn promote_member(
        &self,
        request: Request<PromoteMemberRequest>,
    ) -> Result<Response<MembershipChanged>, Status> {
        let id = request.into_inner().id;
        self.change(MemberChange::Promote { id }).await
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<MembershipChanged>, Status> {
        let id = request.into_inner().id;
        self.change(MemberChange::Remove { id }).await
    }
}
