//! Child processes of this binary, for the commands that start servers (`bench`, `demo`,
//! `test --live`): killed when dropped, and found by the `listening on URL` line a server
//! prints on stderr when it is ready.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// A child process, killed (and waited for) when dropped, unless it already exited.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What to show of a server's other stderr lines (prefixed with its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    Nothing,
    /// Lines that say `error` (why it cannot start).
    Errors,
    /// The same but a refused reload's (`... the running policy stays`): a caller that reloads
    /// on purpose reads that answer from the lines it is sent and reports it itself.
    ErrorsButRefusedReloads,
    Everything,
}

/// Waits (at most 15 s) for `child` to print `listening on URL` on stderr and returns the URL;
/// the rest of its stderr keeps being read (so it never blocks on a full pipe), shown as `echo`
/// says.
pub fn listening_url(child: &mut Child, name: &str, echo: Echo) -> anyhow::Result<String> {
    listening_url_and_lines(child, name, echo, None)
}

/// [`listening_url`], also sending every other stderr line to `lines`.
pub fn listening_url_and_lines(
    child: &mut Child,
    name: &str,
    echo: Echo,
    lines: Option<std::sync::mpsc::Sender<String>>,
) -> anyhow::Result<String> {
    let stderr = child
        .stderr
        .take()
        .with_context(|| format!("the stderr of `tollgate {name}` cannot be read"))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let who = name.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.trim().to_owned());
                continue;
            }
            let shown = match echo {
                Echo::Nothing => false,
                Echo::Errors => line.starts_with("error") || line.contains(" ERROR "),
                Echo::ErrorsButRefusedReloads => {
                    (line.starts_with("error") || line.contains(" ERROR "))
                        && !line.ends_with("the running policy stays")
                }
                Echo::Everything => true,
            };
            if shown {
                let _ = writeln!(std::io::stderr(), "{who}: {line}");
            }
            if let Some(lines) = &lines {
                let _ = lines.send(line);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(url) => Ok(url),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            bail!("`tollgate {name}` exited before it listened")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            bail!("`tollgate {name}` did not start listening within 15 s")
        }
    }
}

/// Starts `exe args` (stdin and stdout closed) and waits for it to listen.
pub fn spawn_listening(exe: &Path, args: &[String], echo: Echo) -> anyhow::Result<(Proc, String)> {
    spawn_listening_with_lines(exe, args, echo, None)
}

/// [`spawn_listening`], also sending every other stderr line to `lines`.
pub fn spawn_listening_with_lines(
    exe: &Path,
    args: &[String],
    echo: Echo,
    lines: Option<std::sync::mpsc::Sender<String>>,
) -> anyhow::Result<(Proc, String)> {
    let name = args.first().map_or("", String::as_str);
    let mut proc = Proc(
        Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{} {}`", exe.display(), args.join(" ")))?,
    );
    let url = listening_url_and_lines(&mut proc.0, name, echo, lines)?;
    Ok((proc, url))
}
