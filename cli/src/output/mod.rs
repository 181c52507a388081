//! Showing API objects the way kubectl does: tables, `describe`, and `-o json|yaml` in
//! Kubernetes' own shape (converted to `k8s-openapi` types), so that scripts written
//! against kubectl's output work with ours. Pure formatting: no API calls.
//!
//! - `k8s`: our objects converted to Kubernetes' types (for `-o json|yaml`);
//! - `rows`: the rows of `get`'s tables (pods, nodes, namespaces, events);
//! - `describe`: `describe pod|node`;
//! - `table`: column layout shared by all the tables (`get`, `describe`, `trace`);
//! - `values`: ages, memory quantities, `<none>`.

mod describe;
mod k8s;
mod rows;
mod table;
mod values;

pub use describe::{describe_node, describe_pod};
pub use k8s::{to_k8s_namespace, to_k8s_node, to_k8s_pod};
pub use rows::{event_row, event_rows, namespace_rows, node_rows, pod_rows, pod_status_text};
pub use table::{print as table, Table};
