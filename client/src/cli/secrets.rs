//! Owns reading secrets from stdin: a secret flag given as `-` (`--secret -`, `--webhook-secret -`,
//! …) takes its value from the first line of stdin, so the secret stays off argv (visible in
//! `ps`) and out of shell history. Stdin is read once; only one flag may be `-`.

use std::io::BufRead as _;

use super::CliError;

/// Stdin, read at most once.
#[derive(Default)]
pub struct Stdin {
    taken_by: Option<&'static str>,
}

impl Stdin {
    /// `value` as given, or the first line of stdin when it is `-`. Empty values become `None`.
    pub fn resolve(&mut self, flag: &'static str, value: Option<String>) -> Result<Option<String>, CliError> {
        match value.as_deref().map(str::trim) {
            Some("-") => {
                if let Some(other) = self.taken_by {
                    return Err(CliError::Usage(format!(
                        "{flag} and {other} both read stdin (`-`); pass one of them through its environment variable"
                    )));
                }
                self.taken_by = Some(flag);
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| CliError::Usage(format!("{flag} -: cannot read stdin: {e}")))?;
                let line = line.trim().to_string();
                if line.is_empty() {
                    return Err(CliError::Usage(format!("{flag} -: stdin was empty")));
                }
                Ok(Some(line))
            }
            Some("") | None => Ok(None),
            Some(v) => Ok(Some(v.to_string())),
        }
    }
}
