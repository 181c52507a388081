//! Showing API objects the way kubectl does: tables, `describe`, and `-o json|yaml` in
//! Kubernetes' own shape (`kubelab_proto::k8s`, the apiserver's own conversion), so that scripts written
//! against kubectl's output work with ours. Pure formatting: no API calls.
//!
//! - `rows`: the rows of `get`'s tables (pods, nodes, namespaces, events);
//! - `describe`: `describe pod|node`;
//! - `table`: column layout shared by all the tables (`get`, `describe`, `trace`);
//! - `values`: ages, memory quantities, `<none>`.

mod describe;
mod rows;
mod table;
mod values;

pub use describe::{describe_node, describe_pod};
pub use kubelab_proto::k8s::printers::pod_status_text;
pub use kubelab_proto::k8s::{
    namespace as to_k8s_namespace, node as to_k8s_node, pod as to_k8s_pod,
};
pub use rows::{event_row, event_rows, namespace_rows, node_rows, pod_rows};
pub use table::{print as table, Table};
