//! Answers one DNS query: from the cluster's records when the name is in the cluster
//! domain (or is the reverse name of a cluster address), else through the forwarder to
//! the node's resolvers (hickory's `ForwardZoneHandler`, CoreDNS's `forward . /etc/resolv.conf`).
//! Cluster names are never forwarded: with `ndots:5` every outside name is first tried
//! with each search domain, and each of those must get a quick NXDOMAIN here.
//! Owns the reply's shape (authoritative, SOA on negative answers), nothing else.

use std::sync::{Arc, RwLock};

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};

use super::records::{Answer, Records};

pub struct ClusterDns {
    pub records: Arc<RwLock<Arc<Records>>>,
    /// The node's resolvers, for every other name; None when the node has none.
    pub forward: Option<Catalog>,
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let (qname, qtype) = match request.request_info() {
            Ok(info) => (info.query.name().to_string(), info.query.query_type()),
            Err(_) => return fail(request, response, ResponseCode::FormErr).await,
        };
        // The guard is dropped before any await.
        let records = self
            .records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let lower = qname.to_ascii_lowercase();
        let ours = lower == records.zone()
            || lower.ends_with(&format!(".{}", records.zone()))
            || records.has_reverse(&lower);
        if !ours {
            tracing::trace!(name = %qname, ?qtype, "forwarded");
            return match &self.forward {
                Some(forward) => forward.handle_request::<R, T>(request, response).await,
                None => fail(request, response, ResponseCode::Refused).await,
            };
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = true;
        let (answers, negative) = match records.lookup(&qname, qtype) {
            Answer::Records(found) => (found, Vec::new()),
            Answer::NoData => (Vec::new(), records.soa().cloned().into_iter().collect()),
            Answer::NxDomain => {
                metadata.response_code = ResponseCode::NXDomain;
                (Vec::new(), records.soa().cloned().into_iter().collect())
            }
        };
        tracing::trace!(name = %qname, ?qtype, answers = answers.len(), "answered");
        let message = MessageResponseBuilder::from_message_request(request).build(
            metadata,
            answers.iter(),
            [],
            negative.iter(),
            [],
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "the answer was not sent");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

async fn fail<R: ResponseHandler>(
    request: &Request,
    mut response: R,
    code: ResponseCode,
) -> ResponseInfo {
    let message =
        MessageResponseBuilder::from_message_request(request).error_msg(&request.metadata, code);
    match response.send_response(message).await {
        Ok(info) => info,
        Err(_) => {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}
