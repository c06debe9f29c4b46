//! Signing secrets kept in a file and re-read on SIGHUP: rotation without a restart.
//!
//! The file holds one secret per line, the current one first:
//!
//! - blank lines are skipped, and so are comments: whole lines whose first character (after
//!   any spaces) is `#`. Text after a secret on its line (`whsec_... # old one`) is refused,
//!   not taken for a comment: it would have become part of the secret;
//! - a secret line holds printable ASCII only, as Ringyo's `whsec_...` secrets do: a line with
//!   an invisible, control or non-ASCII character (a zero-width space or a non-breaking space
//!   pasted with the secret) is refused. Spaces and tabs around a line are layout, and a UTF-8
//!   byte-order mark at the start of the file (some Windows editors write one) is skipped;
//! - the file ends with a newline, as every editor writes it. A file that does not is taken
//!   for one caught half written, and refused.
//!
//! A file refused at start stops the receiver with a message that names the file, the line
//! and the fix, never a secret. Rotating (see README's runbook): add the new endpoint's secret
//! as a second line and send SIGHUP; once Ringyo signs with it, move it first; once the old
//! one stops arriving, delete its line. Each SIGHUP applies the file as it is, from the next
//! request on, and logs how many secrets it read; a file that cannot be used leaves the
//! secrets loaded before in place and logs why. Replace the file atomically (write a new one,
//! then rename it over the old), so a SIGHUP never reads half a file: the newline check
//! catches a write cut inside a line, not one cut between two lines.

use std::path::{Path, PathBuf};

use ringyo_webhook::{
    secrets::{RotatingSecrets, Secrets},
    SecretError,
};
use zeroize::Zeroizing;

/// The secrets read from one file, swapped in place whenever it is re-read.
#[derive(Debug, Clone)]
pub struct SecretsFile {
    path: PathBuf,
    secrets: RotatingSecrets,
}

impl SecretsFile {
    /// Reads `path`, and logs how many secrets it holds.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let secrets = RotatingSecrets::new(read_logged(&path, "at start")?);
        Ok(Self { path, secrets })
    }

    /// The secrets, as the layer's source.
    pub fn secrets(&self) -> RotatingSecrets {
        self.secrets.clone()
    }

    /// Reads the file again and uses what it says now, logging how many secrets it holds; on
    /// an error the secrets stay as they were.
    pub fn reload(&self) -> Result<(), String> {
        self.secrets.set(read_logged(&self.path, "on SIGHUP")?);
        Ok(())
    }

    /// Re-reads the file on every SIGHUP, for as long as the process runs. The handler is in
    /// place when this returns, so a SIGHUP sent after it never stops the process.
    #[cfg(unix)]
    pub fn reload_on_hangup(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if let Err(problem) = self.reload() {
                    tracing::error!(
                        "SIGHUP: {problem}. The secrets stay as they were; send SIGHUP again \
                         once the file is fixed"
                    );
                }
            }
        });
        Ok(())
    }
}

/// [`read`], with a log line that says how many secrets `path` held and `when` it was read.
fn read_logged(path: &Path, when: &str) -> Result<Secrets, String> {
    let secrets = read(path)?;
    tracing::info!(
        "read {} secret(s) from {} {when}, the first one current",
        secrets.len(),
        path.display()
    );
    Ok(secrets)
}

/// The secrets in the file at `path`. Errors name the file and the line, never a secret.
pub fn read(path: &Path) -> Result<Secrets, String> {
    let shown = path.display();
    // The file's bytes hold the secrets: wiped once they are key states. Borrowed as text
    // rather than converted, so no copy is left behind unwiped.
    let bytes = std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|err| format!("cannot read {shown}: {err}"))?;
    // `String::from_utf8`'s error would say nothing of the bytes, but would keep them.
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{shown} is not UTF-8 text"))?;
    // Editors end every line with a newline; a writer cut short (a file rewritten in place
    // while a SIGHUP arrives) leaves a last line without one: half a secret.
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(format!(
            "{shown} does not end with a newline, so it may be half written: write the new \
             file beside it, ending with a newline, then rename it over {shown}"
        ));
    }
    // Notepad and some Windows tools start UTF-8 text with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut secrets = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(secret) =
            secret_on(line).map_err(|why| format!("{shown}, line {number}: {why}"))?
        {
            secrets.push(secret);
        }
    }
    Secrets::from_list(secrets).map_err(|err| match err {
        SecretError::Empty => format!("{shown} holds no secret (one per line, the current first)"),
        // A line `secret_on` passes is always a usable secret; kept for any later check.
        other => format!("{shown}: {other}"),
    })
}

/// The secret on `line`; `None` for a blank line or a comment. The problem with the line
/// otherwise, which never quotes it.
fn secret_on(line: &str) -> Result<Option<&str>, &'static str> {
    // Spaces and tabs around a line are the file's layout, not part of a secret.
    let line = line.trim_matches([' ', '\t']);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (secret, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
    // Printable ASCII is `!` to `~`: what Ringyo's secrets are made of. Anything else
    // would be hashed into the key, and every genuine delivery refused.
    if !secret.bytes().all(|byte| matches!(byte, b'!'..=b'~')) {
        return Err(
            "the secret holds an invisible, control or non-ASCII character (a zero-width \
             space or a non-breaking space pasted with it?); retype the line",
        );
    }
    if !rest.is_empty() {
        return Err("text after the secret; a comment is a whole line of its own, starting with #");
    }
    Ok(Some(secret))
}
