//! The few request bodies clients send in Kubernetes' protobuf encoding instead of JSON
//! (client-go's typed clients do: `kubectl drain` deletes pods with a protobuf
//! `DeleteOptions`). The envelope is `k8s\0` and a `runtime.Unknown` whose `raw` is the
//! message; the messages are declared here with prost, field numbers as in Kubernetes'
//! `generated.proto`. kubelab answers in JSON, which these clients also accept. Objects
//! (`kubectl create deployment`'s Deployment, say) are read by `protobuf_object`.

use prost::Message;

/// The magic bytes before every Kubernetes protobuf object.
pub(super) const MAGIC: &[u8] = b"k8s\0";

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct Preconditions {
    #[prost(string, optional, tag = "1")]
    uid: Option<String>,
    #[prost(string, optional, tag = "2")]
    resource_version: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct DeleteOptions {
    #[prost(int64, optional, tag = "1")]
    grace_period_seconds: Option<i64>,
    #[prost(message, optional, tag = "2")]
    preconditions: Option<Preconditions>,
    #[prost(string, optional, tag = "4")]
    propagation_policy: Option<String>,
    #[prost(string, repeated, tag = "5")]
    dry_run: Vec<String>,
}

/// A protobuf `DeleteOptions` as the JSON one it stands for.
pub fn delete_options(body: &[u8]) -> Result<serde_json::Value, String> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf object (no k8s magic)")?;
    let envelope = Unknown::decode(inner).map_err(|e| e.to_string())?;
    let o = DeleteOptions::decode(envelope.raw.unwrap_or_default().as_slice())
        .map_err(|e| e.to_string())?;
    let mut json = serde_json::json!({ "dryRun": o.dry_run });
    if let Some(g) = o.grace_period_seconds {
        json["gracePeriodSeconds"] = g.into();
    }
    if let Some(p) = o.propagation_policy {
        json["propagationPolicy"] = p.into();
    }
    if let Some(p) = o.preconditions {
        json["preconditions"] = serde_json::json!({
            "uid": p.uid, "resourceVersion": p.resource_version,
        });
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protobuf_delete_options_reads_as_json() {
        let options = DeleteOptions {
            grace_period_seconds: Some(5),
            preconditions: Some(Preconditions {
                uid: Some("u".into()),
                resource_version: None,
            }),
            propagation_policy: Some("Background".into()),
            dry_run: vec![],
        };
        let envelope = Unknown {
            raw: Some(options.encode_to_vec()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(envelope.encode_to_vec());
        let json = delete_options(&body).unwrap();
        assert_eq!(json["gracePeriodSeconds"], 5);
        assert_eq!(json["preconditions"]["uid"], "u");
        assert!(delete_options(b"{}").is_err());
    }
}
