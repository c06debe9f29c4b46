//! Signing secrets kept in a file and re-read on SIGHUP: rotation without a restart.
//!
//! The file holds one secret per line, the current one first; blank lines and lines starting
//! with `#` are skipped. Rotating (see README's runbook): add the new endpoint's secret as a
//! second line and send SIGHUP; once Ringyo signs with it, move it first; once the old one
//! stops arriving, delete its line. Each SIGHUP applies the file as it is, from the next
//! request on; a file that cannot be used leaves the secrets loaded before in place. Replace
//! the file atomically (write a new one, then rename it over the old), so a SIGHUP never reads
//! half a line.

use std::path::{Path, PathBuf};

use ringyo_webhook::{
    secrets::{RotatingSecrets, Secrets},
    SecretError,
};

/// The secrets read from one file, swapped in place whenever it is re-read.
#[derive(Debug, Clone)]
pub(crate) struct SecretsFile {
    path: PathBuf,
    secrets: RotatingSecrets,
}

impl SecretsFile {
    /// Reads `path`.
    pub(crate) fn load(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let secrets = RotatingSecrets::new(read(&path)?);
        Ok(Self { path, secrets })
    }

    /// The secrets, as the layer's source.
    pub(crate) fn secrets(&self) -> RotatingSecrets {
        self.secrets.clone()
    }

    /// Reads the file again and uses what it says now; on an error the secrets stay as they
    /// were. Returns how many secrets there are.
    pub(crate) fn reload(&self) -> Result<usize, String> {
        let secrets = read(&self.path)?;
        let count = secrets.len();
        self.secrets.set(secrets);
        Ok(count)
    }

    /// Re-reads the file on every SIGHUP, for as long as the process runs. The handler is in
    /// place when this returns, so a SIGHUP sent after it never stops the process.
    #[cfg(unix)]
    pub(crate) fn reload_on_hangup(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let path = self.path.display();
                match self.reload() {
                    Ok(count) => tracing::info!(
                        "SIGHUP: re-read {path}: {count} secret(s), the first one current"
                    ),
                    Err(problem) => {
                        tracing::error!("SIGHUP: {problem}; the secrets stay as they were");
                    }
                }
            }
        });
        Ok(())
    }
}

/// The secrets in the file at `path`. Errors name the file, never a secret.
pub(crate) fn read(path: &Path) -> Result<Secrets, String> {
    let shown = path.display();
    // The file's text holds the secrets: wiped once they are key states.
    let text = std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|err| match err.kind() {
            // `read_to_string`'s own message for bytes that are not UTF-8 says nothing of them.
            std::io::ErrorKind::InvalidData => format!("{shown} is not UTF-8 text"),
            _ => format!("cannot read {shown}: {err}"),
        })?;
    // Whitespace around a line is the file's layout, not part of a secret.
    let secrets = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    Secrets::from_list(secrets).map_err(|err| match err {
        SecretError::Empty => format!("{shown} holds no secret (one per line, the current first)"),
        // Trimmed and non-empty, a line is always a usable secret; kept for any later check.
        other => format!("{shown}: {other}"),
    })
}
