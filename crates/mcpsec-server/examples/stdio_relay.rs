//! The floor of the gateway row of `cargo xtask bench`: a relay that does
//! nothing but pass the MCP lines between the client and an upstream
//! server, with the gateway's runtime, so that the bench can compare what
//! `mcpsec proxy` costs with what any process in the middle costs.
//!
//! `stdio_relay -- CMD [ARGS...]` starts `CMD` (stdin and stdout piped,
//! stderr inherited, as `mcpsec proxy` starts an upstream) and copies bytes
//! both ways until either side closes: the client's stdin to the child,
//! the child's stdout to the client. What has arrived is written at once,
//! whole lines and several of them together when several are waiting
//! (as `socat` does), through 64 KiB buffers. The same stack as the
//! gateway: tokio's current-thread runtime, rmcp's non-blocking
//! `stdio_pipes`, tokio's child process pipes, mimalloc. No parsing, no
//! policy, no audit, no confinement of the child.
//!
//! A bench fixture, not a product feature.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// The allocator of `mcpsec` (its default feature `mimalloc`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.split_first() {
        Some((dashes, rest)) if dashes == "--" && !rest.is_empty() => rest.to_vec(),
        _ => return Err("usage: stdio_relay -- CMD [ARGS...]".into()),
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async move {
        let mut child = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(to_child), Some(from_child)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the child's stdin or stdout was not piped".into());
        };
        let (stdin, stdout) = rmcp::transport::io::stdio_pipes();
        // The client closing stdin closes the child's (it then exits); the
        // child closing stdout ends the relay.
        let upstream = tokio::spawn(relay(stdin, to_child));
        relay(from_child, stdout).await?;
        upstream.abort();
        let _ = child.wait().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// Copies `from` to `to` until `from` ends: each write is what one read
/// brought.
async fn relay<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(from: R, mut to: W) -> std::io::Result<()> {
    let mut from = BufReader::with_capacity(64 << 10, from);
    loop {
        let buf = from.fill_buf().await?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        to.write_all(buf).await?;
        from.consume(n);
    }
    to.shutdown().await
}
