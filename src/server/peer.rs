//! Branch-to-branch traffic, `bank.peer.v1.Peer`: the Raft RPCs, writes forwarded to the
//! leader, read indexes for follower reads, status and membership changes. Each call is handed
//! to the [`Branch`], which decodes, carries out and encodes it; errors become statuses in
//! [`super::error`].

use tonic::{Request, Response, Status};

use super::error::ServiceError;
use crate::node::{Branch, BranchError};
use crate::proto::peer::{
    RaftPayload, ReadIndexReply, ReadIndexRequest, RetireReply, RetireRequest, StatusReply,
    StatusRequest,
};

/// Branch-to-branch traffic.
pub struct PeerService {
    pub(super) branch: Branch,
}

/// A peer call's answer, as tonic wants it.
fn answer<T>(answer: Result<T, BranchError>) -> Result<Response<T>, Status> {
    answer
        .map(Response::new)
        .map_err(|e| Status::from(ServiceError::from(e)))
}

#[tonic::async_trait]
impl crate::proto::peer::peer_server::Peer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        answer(self.branch.answer_append_entries(request.get_ref()).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        answer(self.branch.answer_vote(request.get_ref()).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        answer(self.branch.answer_install_snapshot(request.get_ref()).await)
    }

    async fn forward(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        answer(self.branch.answer_forward(request.get_ref()).await)
    }

    async fn forward_group(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        answer(self.branch.answer_forward_group(request.get_ref()).await)
    }

    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        let index = self.branch.answer_read_index().await;
        answer(index.map(|index| ReadIndexReply { index }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        answer(self.branch.status())
    }

    async fn change_members(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        answer(self.branch.answer_change_members(request.get_ref()).await)
    }

    async fn retire(
        &self,
        request: Request<RetireRequest>,
    ) -> Result<Response<RetireReply>, Status> {
        answer(
            self.branch
                .answer_retire(request.get_ref())
                .map(|()| RetireReply {}),
        )
    }
}
