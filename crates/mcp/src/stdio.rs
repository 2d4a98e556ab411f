//! The stdio transport's streams: this process's stdin and stdout as the runtime's own pipes.
//!
//! MCP clients start a stdio server with pipes. tokio's `stdin()` and `stdout()` hand every
//! read and write to the runtime's blocking pool and back (a thread wake-up each way, measured
//! in docs/PERFORMANCE.md); a pipe can instead be read and written through the event loop. These
//! give the pipe when the stream is one (on a copy of the descriptor, made non-blocking: nothing
//! else in a stdio server reads its stdin or writes its stdout), and `None` for anything else (a
//! file, a terminal), for which the caller keeps its blocking fallback.

#[cfg(unix)]
use std::os::fd::AsFd;

/// This process's stdin as a pipe the event loop reads, when it is a pipe. Needs a tokio
/// runtime with I/O enabled.
#[cfg(unix)]
pub fn stdin_pipe() -> Option<tokio::net::unix::pipe::Receiver> {
    fifo(std::io::stdin().as_fd()).and_then(|f| tokio::net::unix::pipe::Receiver::from_file(f).ok())
}

/// This process's stdout as a pipe the event loop writes, when it is a pipe. Needs a tokio
/// runtime with I/O enabled.
#[cfg(unix)]
pub fn stdout_pipe() -> Option<tokio::net::unix::pipe::Sender> {
    fifo(std::io::stdout().as_fd()).and_then(|f| tokio::net::unix::pipe::Sender::from_file(f).ok())
}

/// A copy of the descriptor when it is a FIFO.
#[cfg(unix)]
fn fifo(fd: std::os::fd::BorrowedFd<'_>) -> Option<std::fs::File> {
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
    file.metadata().ok()?.file_type().is_fifo().then_some(file)
}

/// This process's stdin: the pipe when it is one, else tokio's (blocking-pool) stdin.
pub fn stdin() -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    #[cfg(unix)]
    if let Some(pipe) = stdin_pipe() {
        return Box::new(pipe);
    }
    Box::new(tokio::io::stdin())
}

/// This process's stdout: the pipe when it is one, else tokio's (blocking-pool) stdout.
pub fn stdout() -> Box<dyn tokio::io::AsyncWrite + Unpin + Send> {
    #[cfg(unix)]
    if let Some(pipe) = stdout_pipe() {
        return Box::new(pipe);
    }
    Box::new(tokio::io::stdout())
}
