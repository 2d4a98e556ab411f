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

/// One line of a newline-delimited stream, read with its size bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A line is in the buffer (without its `\n` and a trailing `\r`; it may be blank).
    Message,
    /// The line was longer than the limit: its bytes were read and thrown away up to the next
    /// newline (or the end), never held; `size` is how many there were.
    TooLarge { size: usize },
    /// The stream ended (nothing was read).
    End,
}

/// What [`read_line`] and [`read_line_blocking`] share: takes the bytes of `available` up to
/// and including a newline into `line` while it fits in `max` bytes (plus a `\r`), counting
/// the rest. Returns how many bytes to consume and whether the line ended.
fn take_line(available: &[u8], line: &mut Vec<u8>, seen: &mut usize, max: usize) -> (usize, bool) {
    let (part, ended) = match available.iter().position(|&b| b == b'\n') {
        Some(i) => (&available[..i], true),
        None => (available, false),
    };
    *seen = seen.saturating_add(part.len());
    // One byte more than the limit is kept, for a `\r` before the newline.
    if *seen <= max.saturating_add(1) {
        line.extend_from_slice(part);
    } else if !line.is_empty() {
        // Over the limit: nothing of it is kept.
        line.clear();
        line.shrink_to(64 * 1024);
    }
    (part.len() + usize::from(ended), ended)
}

/// The verdict on a line once it ended: strips the `\r` and checks the limit.
fn finish_line(line: &mut Vec<u8>, seen: usize, max: usize) -> Line {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if seen > max.saturating_add(1) || line.len() > max {
        line.clear();
        return Line::TooLarge { size: seen };
    }
    Line::Message
}

/// Reads one line (up to `\n`) into `line` (cleared first), holding at most `max` bytes of it
/// (plus a `\r`): a longer line is read to its end and thrown away as it arrives, so memory
/// stays bounded whatever the peer sends. A last line without a newline counts as a line.
pub async fn read_line<R>(reader: &mut R, line: &mut Vec<u8>, max: usize) -> std::io::Result<Line>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    line.clear();
    let mut seen = 0usize;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            if seen == 0 {
                return Ok(Line::End);
            }
            return Ok(finish_line(line, seen, max));
        }
        let (used, ended) = take_line(available, line, &mut seen, max);
        reader.consume(used);
        if ended {
            return Ok(finish_line(line, seen, max));
        }
    }
}

/// [`read_line`] for a blocking reader (a terminal or a file read on a thread of its own).
pub fn read_line_blocking<R>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line>
where
    R: std::io::BufRead,
{
    line.clear();
    let mut seen = 0usize;
    loop {
        let available = match reader.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if seen == 0 {
                return Ok(Line::End);
            }
            return Ok(finish_line(line, seen, max));
        }
        let (used, ended) = take_line(available, line, &mut seen, max);
        reader.consume(used);
        if ended {
            return Ok(finish_line(line, seen, max));
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    /// Reads every line of `input` with both readers, in chunks of `chunk` bytes, and checks
    /// they agree; returns what they read.
    fn lines(input: &[u8], max: usize, chunk: usize) -> Vec<(Line, Vec<u8>)> {
        let mut blocking = std::io::BufReader::with_capacity(chunk, input);
        let mut got = Vec::new();
        let mut line = Vec::new();
        loop {
            let l = read_line_blocking(&mut blocking, &mut line, max).unwrap();
            if l == Line::End {
                break;
            }
            got.push((l, line.clone()));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let from_async = runtime.block_on(async {
            let mut reader = tokio::io::BufReader::with_capacity(chunk, input);
            let mut got = Vec::new();
            let mut line = Vec::new();
            loop {
                let l = read_line(&mut reader, &mut line, max).await.unwrap();
                if l == Line::End {
                    break;
                }
                got.push((l, line.clone()));
            }
            got
        });
        assert_eq!(got, from_async);
        got
    }

    /// A line over the limit is reported with its size and skipped, the lines around it are
    /// read whole, whatever the chunking; `\r\n` endings and a last line without a newline work.
    #[test]
    fn a_line_over_the_limit_is_skipped_and_the_next_is_read() {
        let big = vec![b'x'; 1000];
        let mut input = b"{\"a\":1}\r\n".to_vec();
        input.extend_from_slice(&big);
        input.extend_from_slice(b"\n\n12345678\n123456789\nlast");
        for chunk in [1, 3, 7, 64, 4096] {
            assert_eq!(
                lines(&input, 8, chunk),
                vec![
                    (Line::Message, b"{\"a\":1}".to_vec()),
                    (Line::TooLarge { size: 1000 }, Vec::new()),
                    (Line::Message, Vec::new()),
                    (Line::Message, b"12345678".to_vec()),
                    (Line::TooLarge { size: 9 }, Vec::new()),
                    (Line::Message, b"last".to_vec()),
                ],
                "chunk {chunk}"
            );
        }
    }

    /// The buffer never holds more than the limit and a `\r`, however long the line.
    #[test]
    fn memory_stays_under_the_limit_for_a_huge_line() {
        let input = vec![b'y'; 8 << 20];
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, input.as_slice());
        let mut line = Vec::new();
        let l = read_line_blocking(&mut reader, &mut line, 1024).unwrap();
        assert_eq!(l, Line::TooLarge { size: 8 << 20 });
        assert!(line.capacity() <= 64 * 1024, "{}", line.capacity());
    }
}
