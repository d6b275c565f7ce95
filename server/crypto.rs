//! Secrets at rest (SPEC §6): AES-256-GCM with a fresh random 96-bit nonce per encryption,
//! the key id stored beside the ciphertext, and the project, provider and field bound as
//! associated data so a ciphertext copied to another project or field fails to decrypt.
//!
//! Stored form: `v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`.
//! The keyring's first key encrypts; every key decrypts (rotation: add a new key in front,
//! run `capydb-auth-sync rotate-keys`, then drop the old key).
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

const FORMAT: &str = "v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("master keys must be `id:base64key` entries separated by commas: {0}")]
    BadKeySpec(String),
    #[error("the keyring is empty")]
    EmptyKeyring,
    #[error("stored secret is not in the expected format")]
    BadCiphertext,
    #[error("stored secret was encrypted with key `{0}`, which is not in the keyring")]
    UnknownKey(String),
    #[error("stored secret failed to decrypt (wrong key, or it belongs to another project or field)")]
    DecryptFailed,
}

/// What a secret belongs to; bound into the ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub struct SecretContext<'a> {
    pub project_id: &'a str,
    pub provider: &'a str,
    pub field: &'a str,
}

impl SecretContext<'_> {
    fn aad(&self) -> Vec<u8> {
        // Unit separators keep ("a","bc") and ("ab","c") apart.
        format!("capydb-auth-sync\x1f{}\x1f{}\x1f{}", self.project_id, self.provider, self.field).into_bytes()
    }
}

struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
}

/// The master keys. Never printed: `Debug` shows only the key ids.
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("key_ids", &self.key_ids()).finish()
    }
}

impl Keyring {
    /// Parses `id:base64key[,id:base64key…]`; each key is 32 bytes (standard base64).
    pub fn parse(spec: &SecretString) -> Result<Self, CryptoError> {
        let mut keys = Vec::new();
        for entry in spec.expose_secret().split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, b64) =
                entry.split_once(':').ok_or_else(|| CryptoError::BadKeySpec("an entry has no `id:` prefix".into()))?;
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(CryptoError::BadKeySpec(format!("key id `{id}` must be non-empty [A-Za-z0-9_-]")));
            }
            let bytes =
                B64.decode(b64).map_err(|_| CryptoError::BadKeySpec(format!("key `{id}` is not valid base64")))?;
            if bytes.len() != 32 {
                return Err(CryptoError::BadKeySpec(format!("key `{id}` is {} bytes; AES-256 needs 32", bytes.len())));
            }
            if keys.iter().any(|k: &MasterKey| k.id == id) {
                return Err(CryptoError::BadKeySpec(format!("key id `{id}` appears twice")));
            }
            keys.push(MasterKey { id: id.to_string(), cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)) });
        }
        if keys.is_empty() {
            return Err(CryptoError::EmptyKeyring);
        }
        Ok(Keyring { keys })
    }

    /// A fresh random key in keyring syntax (`id:base64`), for dev mode and `generate-key`.
    pub fn generate_spec(id: &str) -> SecretString {
        let key = Aes256Gcm::generate_key(OsRng);
        SecretString::from(format!("{id}:{}", B64.encode(key)))
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    pub fn active_key_id(&self) -> &str {
        &self.keys[0].id
    }

    pub fn encrypt(&self, plaintext: &SecretString, ctx: SecretContext<'_>) -> String {
        let key = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        let aad = ctx.aad();
        let ct = key
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext.expose_secret().as_bytes(), aad: &aad })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!("{FORMAT}:{}:{}", key.id, B64.encode(blob))
    }

    pub fn decrypt(&self, stored: &str, ctx: SecretContext<'_>) -> Result<SecretString, CryptoError> {
        let (id, blob) = parse_stored(stored)?;
        let key = self.keys.iter().find(|k| k.id == id).ok_or_else(|| CryptoError::UnknownKey(id.to_string()))?;
        if blob.len() < 12 + 16 {
            return Err(CryptoError::BadCiphertext);
        }
        let (nonce, ct) = blob.split_at(12);
        let aad = ctx.aad();
        let pt = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| CryptoError::DecryptFailed)?;
        String::from_utf8(pt).map(SecretString::from).map_err(|_| CryptoError::DecryptFailed)
    }

    /// The id of the key a stored secret was encrypted with.
    pub fn stored_key_id(stored: &str) -> Result<&str, CryptoError> {
        let mut parts = stored.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(FORMAT), Some(id), Some(_)) => Ok(id),
            _ => Err(CryptoError::BadCiphertext),
        }
    }
}

fn parse_stored(stored: &str) -> Result<(&str, Vec<u8>), CryptoError> {
    let id = Keyring::stored_key_id(stored)?;
    let b64 = &stored[FORMAT.len() + 1 + id.len() + 1..];
    let blob = B64.decode(b64).map_err(|_| CryptoError::BadCiphertext)?;
    Ok((id, blob))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(project: &'a str, field: &'a str) -> SecretContext<'a> {
        SecretContext { project_id: project, provider: "clerk", field }
    }

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(&SecretString::from(spec.to_string())).unwrap()
    }

    #[test]
    fn round_trips_and_uses_a_fresh_nonce_each_time() {
        let k = Keyring::parse(&Keyring::generate_spec("k1")).unwrap();
        let secret = SecretString::from("sk_test_abc".to_string());
        let a = k.encrypt(&secret, ctx("p1", "secret_key"));
        let b = k.encrypt(&secret, ctx("p1", "secret_key"));
        assert_ne!(a, b, "two encryptions of the same secret must differ");
        assert!(a.starts_with("v1:k1:"));
        assert!(!a.contains("sk_test_abc"));
        assert_eq!(k.decrypt(&a, ctx("p1", "secret_key")).unwrap().expose_secret(), "sk_test_abc");
    }

    #[test]
    fn ciphertext_moved_to_another_project_or_field_fails() {
        let k = Keyring::parse(&Keyring::generate_spec("k1")).unwrap();
        let stored = k.encrypt(&SecretString::from("whsec_x".to_string()), ctx("p1", "webhook_signing_secret"));
        assert_eq!(k.decrypt(&stored, ctx("p2", "webhook_signing_secret")).unwrap_err(), CryptoError::DecryptFailed);
        assert_eq!(k.decrypt(&stored, ctx("p1", "secret_key")).unwrap_err(), CryptoError::DecryptFailed);
        let other_provider = SecretContext { project_id: "p1", provider: "auth0", field: "webhook_signing_secret" };
        assert_eq!(k.decrypt(&stored, other_provider).unwrap_err(), CryptoError::DecryptFailed);
    }

    #[test]
    fn first_key_encrypts_all_keys_decrypt() {
        let old = Keyring::generate_spec("old");
        let new = Keyring::generate_spec("new");
        let before = Keyring::parse(&old).unwrap();
        let stored = before.encrypt(&SecretString::from("s".to_string()), ctx("p", "f"));
        let both =
            Keyring::parse(&SecretString::from(format!("{},{}", new.expose_secret(), old.expose_secret()))).unwrap();
        assert_eq!(both.active_key_id(), "new");
        assert_eq!(both.decrypt(&stored, ctx("p", "f")).unwrap().expose_secret(), "s");
        let only_new = Keyring::parse(&new).unwrap();
        assert_eq!(only_new.decrypt(&stored, ctx("p", "f")).unwrap_err(), CryptoError::UnknownKey("old".into()));
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let k = Keyring::parse(&Keyring::generate_spec("k1")).unwrap();
        let stored = k.encrypt(&SecretString::from("s".to_string()), ctx("p", "f"));
        let mut blob = B64.decode(stored.rsplit(':').next().unwrap()).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        let tampered = format!("v1:k1:{}", B64.encode(blob));
        assert_eq!(k.decrypt(&tampered, ctx("p", "f")).unwrap_err(), CryptoError::DecryptFailed);
        assert_eq!(k.decrypt("garbage", ctx("p", "f")).unwrap_err(), CryptoError::BadCiphertext);
    }

    #[test]
    fn rejects_bad_key_specs_without_echoing_key_material() {
        for bad in ["", "nokey", "k1:!!!", "k1:AAAA", "k 1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="] {
            let err = Keyring::parse(&SecretString::from(bad.to_string())).unwrap_err();
            assert!(!err.to_string().contains("AAAA"), "{err}");
        }
        let dup =
            format!("{},{}", "a:".to_string() + &B64.encode([0u8; 32]), "a:".to_string() + &B64.encode([1u8; 32]));
        assert!(Keyring::parse(&SecretString::from(dup)).is_err());
        let debug = format!("{:?}", ring(&format!("a:{}", B64.encode([7u8; 32]))));
        assert!(!debug.contains(&B64.encode([7u8; 32])));
    }
}
