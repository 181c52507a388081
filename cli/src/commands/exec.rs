//! `kubelab exec POD [-c CONTAINER] [-i] -- COMMAND ARGS...`: runs a command in a running
//! container, through the apiserver to the pod's agent, and exits with its exit code.
//! Without a TTY: stdout and stderr come back separately; stdin is sent only with `-i`.

use futures::StreamExt;
use kubelab_proto::v1::ExecRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::{Api, Connection};

#[derive(Debug, clap::Args)]
pub struct ExecOptions {
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Pass this terminal's stdin to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn run(
    server: &Connection,
    namespace: &str,
    name: &str,
    options: ExecOptions,
) -> anyhow::Result<i32> {
    let mut api = Api::connect(server).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(ExecRequest {
        namespace: namespace.into(),
        name: name.into(),
        container: options.container.unwrap_or_default(),
        command: options.command,
        stdin: Vec::new(),
        stdin_eof: !options.stdin,
        ..Default::default()
    })
    .await?;
    if options.stdin {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = input.read(&mut buf).await.unwrap_or(0);
                let message = ExecRequest {
                    stdin: buf[..n].to_vec(),
                    stdin_eof: n == 0,
                    ..Default::default()
                };
                if tx.send(message).await.is_err() || n == 0 {
                    return;
                }
            }
        });
    } else {
        drop(tx);
    }
    let mut stream = api
        .pods
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(api.error())?
        .into_inner();
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    while let Some(output) = stream.next().await {
        let output = output.map_err(api.error())?;
        stdout.write_all(&output.stdout).await?;
        stderr.write_all(&output.stderr).await?;
        if let Some(code) = output.exit_code {
            stdout.flush().await?;
            stderr.flush().await?;
            return Ok(code);
        }
    }
    anyhow::bail!("the connection ended before the command did (is the pod's agent running?)")
}
