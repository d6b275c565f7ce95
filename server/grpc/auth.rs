//! Bearer-token authentication for the control API. Tokens are compared as SHA-256 digests
//! in constant time, so neither content nor length leaks through timing; health and
//! reflection are mounted without this interceptor.
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

#[derive(Clone)]
pub struct AdminAuth {
    digests: std::sync::Arc<Vec<[u8; 32]>>,
}

impl AdminAuth {
    pub fn new(tokens: &[SecretString]) -> Self {
        AdminAuth { digests: std::sync::Arc::new(tokens.iter().map(|t| digest(t.expose_secret())).collect()) }
    }

    /// Whether `presented` matches any configured token; every token is compared.
    pub fn accepts(&self, presented: &str) -> bool {
        let d = digest(presented);
        self.digests.iter().fold(0u8, |acc, known| acc | known.ct_eq(&d).unwrap_u8()) == 1
    }

    /// The tonic interceptor.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let token = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")));
        match token {
            Some(t) if self.accepts(t.trim()) => Ok(req),
            Some(_) => Err(Status::unauthenticated("invalid admin token")),
            None => Err(Status::unauthenticated("missing `authorization: Bearer <admin token>` metadata")),
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_any_configured_token_and_nothing_else() {
        let auth = AdminAuth::new(&[
            SecretString::from("token-one-0123456789".to_string()),
            SecretString::from("token-two-0123456789".to_string()),
        ]);
        assert!(auth.accepts("token-one-0123456789"));
        assert!(auth.accepts("token-two-0123456789"));
        assert!(!auth.accepts("token-three-0123456789"));
        assert!(!auth.accepts(""));
        let mut req = Request::new(());
        req.metadata_mut().insert("authorization", "Bearer token-two-0123456789".parse().unwrap());
        assert!(auth.check(req).is_ok());
        let mut req = Request::new(());
        req.metadata_mut().insert("authorization", "Basic token-two-0123456789".parse().unwrap());
        assert_eq!(auth.check(req).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(auth.check(Request::new(())).unwrap_err().code(), tonic::Code::Unauthenticated);
    }
}
