//! Validated input: newtypes whose `parse` is the only way in, so the rest of the service
//! never sees a malformed project id or secret. Errors name the request field (SPEC §8).
use secrecy::{ExposeSecret, SecretString};

use crate::providers::ProviderKind;

/// One invalid request field: its name as the request spells it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: &'static str, description: impl Into<String>) -> Self {
        FieldViolation { field, description: description.into() }
    }
}

/// 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn parse(s: &str) -> Result<Self, FieldViolation> {
        let ok = (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(ProjectId(s.to_string()))
        } else {
            Err(FieldViolation::new("project_id", "must be 1-64 characters of A-Z, a-z, 0-9, _ and -"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Clerk Backend API secret key: `sk_live_…` or `sk_test_…`.
pub struct ClerkSecretKey(SecretString);

impl ClerkSecretKey {
    pub fn parse(s: &str) -> Result<Self, FieldViolation> {
        let rest = s.strip_prefix("sk_live_").or_else(|| s.strip_prefix("sk_test_"));
        match rest {
            // Real keys are ~40 characters; a short one would be mostly revealed by the hint.
            Some(r) if r.len() >= 12 && r.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(ClerkSecretKey(SecretString::from(s.to_string())))
            }
            _ => Err(FieldViolation::new(
                "credentials.secret_key",
                "a Clerk secret key is sk_live_ or sk_test_ followed by at least 12 characters, no spaces",
            )),
        }
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }

    /// `sk_live_…a1b2`: the prefix and the last 4 characters, nothing else.
    pub fn hint(&self) -> String {
        secret_key_hint(self.0.expose_secret())
    }
}

pub fn secret_key_hint(key: &str) -> String {
    let prefix = if key.starts_with("sk_live_") {
        "sk_live_"
    } else if key.starts_with("sk_test_") {
        "sk_test_"
    } else {
        ""
    };
    let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{prefix}…{tail}")
}

/// A webhook secret in the form the provider uses (the provider's own check decides).
pub struct WebhookSecret(SecretString);

impl WebhookSecret {
    pub fn parse(provider: ProviderKind, s: &str) -> Result<Self, FieldViolation> {
        provider
            .provider()
            .check_webhook_secret(s)
            .map_err(|description| FieldViolation::new("credentials.webhook_signing_secret", description))?;
        Ok(WebhookSecret(SecretString::from(s.to_string())))
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids() {
        assert!(ProjectId::parse("proj_1-A").is_ok());
        assert!(ProjectId::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "a b", "ü", "p/1", &"a".repeat(65)] {
            assert_eq!(ProjectId::parse(bad).unwrap_err().field, "project_id");
        }
    }

    #[test]
    fn clerk_keys_and_hints() {
        let k = ClerkSecretKey::parse("sk_live_abcdefghijklmnopa1b2").unwrap();
        assert_eq!(k.hint(), "sk_live_…a1b2");
        assert_eq!(ClerkSecretKey::parse("sk_test_0123456789abcdef").unwrap().hint(), "sk_test_…cdef");
        assert!(ClerkSecretKey::parse("sk_test_0123456789").is_err(), "too short to hint safely");
        for bad in ["pk_live_abc", "sk_live_", "sk_prod_abcdef", "sk_test_ab cd"] {
            assert_eq!(ClerkSecretKey::parse(bad).err().unwrap().field, "credentials.secret_key");
        }
    }

    #[test]
    fn webhook_secrets() {
        assert!(WebhookSecret::parse(ProviderKind::Clerk, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(WebhookSecret::parse(ProviderKind::Clerk, "whsec_not base64!").is_err());
        assert!(WebhookSecret::parse(ProviderKind::Clerk, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse(ProviderKind::Auth0, "short").is_err());
        assert!(WebhookSecret::parse(ProviderKind::BetterAuth, "a-long-enough-secret").is_ok());
    }
}
