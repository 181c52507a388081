//! `kubelab logs POD [-c CONTAINER]`: the container's output, from its node's agent
//! (through the apiserver, which proxies the request).

use futures::StreamExt;
use kubelab_proto::v1::LogsRequest;

use crate::api::Api;

pub async fn run(
    server: &str,
    namespace: &str,
    name: &str,
    container: Option<String>,
) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    let request = LogsRequest {
        namespace: namespace.into(),
        name: name.into(),
        container: container.unwrap_or_default(),
        follow: false,
    };
    let mut stream = api
        .pods
        .logs(request)
        .await
        .map_err(api.error())?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(api.error())?;
        std::io::Write::write_all(&mut out, &chunk.data)?;
    }
    Ok(())
}
